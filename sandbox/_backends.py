"""Isolation backends as the worker process sees them: compile source, replay a program.

The pool and the wire protocol do not depend on the backend. A new backend (``wasm``) adds a
module with a class like :class:`~sandbox.restricted._backend.RestrictedBackend`, an entry in
:data:`SANDBOXES`, and uses :class:`~treadle.runtime.Replay` for step semantics, so records,
retries and suspends behave the same in every backend.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from sandbox._messages import ReplayFields
from sandbox._types import Limits
from treadle.runtime import Channel
from treadle.runtime._messages import Outcome

# name -> "module:Class"; imported lazily so the engine process never loads a backend.
SANDBOXES: dict[str, str] = {
    "restricted": "sandbox.restricted._backend:RestrictedBackend",
    "wasm": "sandbox.wasm._python:WasmPythonBackend",
    "wasm-module": "sandbox.wasm._module:WasmModuleBackend",
}


class Program(Protocol):
    class_name: str

    def check(self) -> None:
        """Raise ``CodeInvalid`` if the program cannot start; used at validation."""
        ...

    def replay(
        self, request: ReplayFields, limits: Limits, channel: Channel
    ) -> tuple[Outcome, bool]:
        """Run one replay: the outcome message, and whether the worker must be recycled."""
        ...


class Backend(Protocol):
    def compile(self, source: str, class_name: str | None) -> Program:
        """Compile ``source``; raise ``CodeInvalid`` listing every problem."""
        ...


def load_backend(name: str) -> Backend:
    module_name, _, class_name = SANDBOXES[name].partition(":")
    backend: Backend = getattr(importlib.import_module(module_name), class_name)()
    return backend


def preload(name: str) -> None:
    """In a new worker for sandbox ``name``, before it drops privileges: load its runtime.

    A backend with a ``preload`` hook loads there what a worker can no longer read later (the
    Wasm backends: wasmtime and their compiled runtime); it never raises, and reports a
    failure when asked to compile.
    """
    if name in SANDBOXES:
        hook = getattr(load_backend(name), "preload", None)
        if hook is not None:
            hook()
