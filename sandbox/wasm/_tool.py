"""``python -m sandbox.wasm._tool``: build the Python-in-Wasm runtime ahead of time (an image
build step, CI), and the compile child processes of :mod:`sandbox.wasm._build`.

A module of its own, which the ``sandbox`` package does not import, so that ``-m`` runs it once.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from sandbox.wasm._build import (
    compile_component,
    compile_module,
    ensure_python_runtime,
    limit_child,
)


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else "runtime"
    if command.startswith("compile-"):
        limit_child()  # compiling untrusted modules: bounded memory and CPU
    if command == "compile-component":
        compile_component(Path(argv[2]), Path(argv[3]))
    elif command == "compile-module":
        compile_module(Path(argv[2]))
    elif command == "runtime":
        # Build ahead of time (an image build step, CI).
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        started = time.monotonic()
        path = ensure_python_runtime()
        print(f"Python-in-Wasm runtime: {path} ({time.monotonic() - started:.1f} s)")
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)
