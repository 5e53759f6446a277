"""The core-module guest ABI (docs/wasm.md): what a module may import and must export.

Checked statically on the compiled module, at upload and again before a worker runs it, so a
module that would fail to link is refused with every problem listed, not at its first replay.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from sandbox._compile import Problem, problem

if TYPE_CHECKING:
    import wasmtime

IMPORT_MODULE = "treadle"
# name -> (params, results), as wasmtime spells the value types.
IMPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "step_begin": (("i32", "i32", "i32", "i32"), ("i32",)),
    "step_end": (("i32", "i32", "i32", "i32"), ()),
    "step_fail": (("i32", "i32", "i32", "i32"), ()),
    "sleep": (("i32", "i32", "i64"), ()),
    "wait_for_event": (("i32", "i32", "i32", "i32", "i64", "i32", "i32"), ("i32",)),
    "log": (("i32", "i32"), ()),
}
EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alloc": (("i32",), ("i32",)),
    "run": (("i32", "i32"), ("i64",)),
}
INITIALIZE = "_initialize"  # a WASI reactor's constructor: called first when exported
MAX_MODULE_BYTES = 8 * 1024 * 1024
_MAGIC = b"\0asm\x01\0\0\0"


def decode(source: str) -> bytes:
    """The module bytes an artifact carries (base64); CodeInvalid-style problems otherwise."""
    try:
        wasm = base64.b64decode(source.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("wasm_base64 is not valid base64") from None
    if len(wasm) > MAX_MODULE_BYTES:
        raise ValueError(f"the module is {len(wasm)} bytes; the limit is {MAX_MODULE_BYTES}")
    if not wasm.startswith(_MAGIC):
        if wasm.startswith(b"\0asm"):
            raise ValueError(
                "this is a WebAssembly component, not a core module: build a core module "
                "(wasm32, no WASI) that implements the treadle ABI"
            )
        raise ValueError("not a WebAssembly module (it must start with \\0asm, version 1)")
    return wasm


def _signature(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


def _spelled(signature: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = signature
    arrow = f" -> {', '.join(results)}" if results else ""
    return f"({', '.join(params)}){arrow}"


def problems(module: wasmtime.Module) -> list[Problem]:
    """Every way ``module`` departs from the ABI; empty when it can run."""
    import wasmtime

    found: list[Problem] = []
    for item in module.imports:
        where = f"import {item.module}.{item.name}"
        expected = IMPORTS.get(item.name or "") if item.module == IMPORT_MODULE else None
        if expected is None:
            allowed = ", ".join(f"{IMPORT_MODULE}.{name}" for name in IMPORTS)
            found.append(
                problem(1, 1, f"{where} is not allowed: a module may import only {allowed}")
            )
        elif not isinstance(item.type, wasmtime.FuncType):
            found.append(problem(1, 1, f"{where} must be a function {_spelled(expected)}"))
        elif _signature(item.type) != expected:
            actual = _spelled(_signature(item.type))
            found.append(
                problem(1, 1, f"{where} has type {actual}; the ABI says {_spelled(expected)}")
            )
    exports = {item.name: item.type for item in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        found.append(problem(1, 1, "the module must export its linear memory as 'memory'"))
    for name, expected in {**EXPORTS, INITIALIZE: ((), ())}.items():
        ty = exports.get(name)
        if ty is None and name == INITIALIZE:
            continue
        if not isinstance(ty, wasmtime.FuncType) or _signature(ty) != expected:
            found.append(
                problem(1, 1, f"the module must export a function {name}{_spelled(expected)}")
            )
    return found
