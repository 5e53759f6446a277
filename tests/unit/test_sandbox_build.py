"""The child processes that compile a tenant's core module: none of the server's secrets."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.wasm import _build as _wasm_build

# A core module's header and bytes of this test's own (nothing compiles it: see below).
MODULE = b"\0asm\x01\0\0\0" + b"test_the_compile_child_gets_none_of_the_servers_environment"


def test_the_compile_child_gets_none_of_the_servers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen"
    interpreter = tmp_path / "python"  # stands in for Python: tells what the child was given
    interpreter.write_text(f'#!/bin/sh\nenv > "{seen}"\necho "$@" >> "{seen}"\nexit 1\n')
    interpreter.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TREADLE_ADMIN_TOKEN", "the-admin-token")
    monkeypatch.setenv("TREADLE_DATABASE_URL", "postgresql://app:s3cret@db/treadle")
    _wasm_build.ensure_module_compiled(base64.b64encode(MODULE).decode())
    lines = seen.read_text().splitlines()
    assert "-m sandbox.wasm._tool compile-module" in lines[-1]  # it did run
    names = {line.partition("=")[0] for line in lines[:-1]}
    assert "the-admin-token" not in seen.read_text() and "s3cret" not in seen.read_text()
    assert names - {"PWD", "SHLVL", "_"} == {"PATH", "LANG"}  # what sh adds, and ours


def test_a_compile_child_limits_itself_before_it_reads_the_module() -> None:
    probe = (
        "import resource\n"
        "from sandbox.wasm._build import limit_child\n"
        "limit_child()\n"
        "for name in ('RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_CORE'):\n"
        "    print(resource.getrlimit(getattr(resource, name))[0])\n"
    )
    root = Path(_wasm_build.__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, timeout=60
    )
    memory, cpu, size, core = (int(line) for line in result.stdout.split())
    assert memory == 2 << 30 and cpu == 120 and size == 1 << 30 and core == 0
