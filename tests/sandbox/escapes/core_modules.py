"""Escape and abuse cases for core Wasm modules (the ``wasm-module`` backend): a module can
only use the ``treadle`` ABI, and every misuse of it is an error that names it."""

from __future__ import annotations

from dataclasses import dataclass

from tests.sandbox.escapes import Expectation, Raises, Rejected, Returns
from tests.wasm_guests import wat

__all__ = ["MODULE_CASES", "ModuleCase"]

ABI = """
  (import "treadle" "step_begin" (func $step_begin (param i32 i32 i32 i32) (result i32)))
  (import "treadle" "step_end" (func $step_end (param i32 i32 i32 i32)))
  (import "treadle" "log" (func $log (param i32 i32)))
  (import "treadle" "sleep" (func $sleep (param i32 i32 i64)))
  (memory (export "memory") PAGES)
  (data (i32.const 0) "abuse")
  (data (i32.const 16) "1")
  (data (i32.const 32) "-1")
  (data (i32.const 48) "not json")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
"""
MINUS_ONE = "(i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 2))"
ABI_ERROR = Raises("WasmAbiError")


@dataclass(frozen=True)
class ModuleCase:
    id: str
    run: str  # the body of run(event_ptr, event_len) -> i64
    expected: Expectation
    extra: str = ""  # more module fields
    imports: str = ""  # more imports, before the ABI's
    pages: int = 1  # the size of its memory, at start

    def wasm(self) -> bytes:
        return wat(
            f"(module {self.imports} {ABI.replace('PAGES', str(self.pages))} {self.extra}"
            f' (func (export "run") (param i32 i32) (result i64) {self.run}))'
        )


def _wasi(name: str, params: str) -> str:
    return f'(import "wasi_snapshot_preview1" "{name}" (func (param {params}) (result i32)))'


MODULE_CASES = [
    ModuleCase(
        "WASI environ_get",
        "(i64.const 0)",
        Rejected("", "import wasi_snapshot_preview1.environ_get is not allowed"),
        imports=_wasi("environ_get", "i32 i32"),
    ),
    ModuleCase(
        "WASI fd_write",
        "(i64.const 0)",
        Rejected("", "import wasi_snapshot_preview1.fd_write is not allowed"),
        imports=_wasi("fd_write", "i32 i32 i32 i32"),
    ),
    ModuleCase(
        "WASI sock_accept",
        "(i64.const 0)",
        Rejected("", "import wasi_snapshot_preview1.sock_accept is not allowed"),
        imports=_wasi("sock_accept", "i32 i32 i32"),
    ),
    ModuleCase(
        "an import of an unknown host function",
        "(i64.const 0)",
        Rejected("", "import treadle.read_file is not allowed"),
        imports='(import "treadle" "read_file" (func (param i32 i32)))',
    ),
    ModuleCase(
        "a log pointer outside memory",
        "(call $log (i32.const 999999) (i32.const 16)) (i64.const 0)",
        ABI_ERROR,
    ),
    ModuleCase(
        "a log length past the end of memory",
        "(call $log (i32.const 0) (i32.const -1)) (i64.const 0)",
        ABI_ERROR,
    ),
    ModuleCase(
        "an output outside memory",
        "(i64.or (i64.shl (i64.const 65530) (i64.const 32)) (i64.const 100))",
        ABI_ERROR,
    ),
    ModuleCase(
        "an output that is not JSON",
        "(i64.or (i64.shl (i64.const 48) (i64.const 32)) (i64.const 8))",
        ABI_ERROR,
    ),
    ModuleCase(
        "a step result that is not JSON",
        "(drop (call $step_begin (i32.const 0) (i32.const 5) (i32.const 512) (i32.const 64)))"
        " (call $step_end (i32.const 0) (i32.const 5) (i32.const 48) (i32.const 8))"
        " (i64.const 0)",
        Raises("TypeError", message="is not valid JSON"),
    ),
    ModuleCase(
        "a negative sleep",
        "(call $sleep (i32.const 0) (i32.const 5) (i64.const -1)) (i64.const 0)",
        Raises("WasmAbiError", "InvalidDuration", "InvalidInput"),
    ),
    ModuleCase(
        "a table grown past its limit",
        "(if (i32.eq (table.grow $t (ref.null func) (i32.const 100000000)) (i32.const -1))"
        f" (then (return {MINUS_ONE}))) (unreachable)",
        Returns(-1),
        extra="(table $t 1 funcref)",
    ),
    ModuleCase(
        "a memory larger than the limit at start",
        "(i64.const 0)",
        Rejected("", "memory"),
        pages=60000,
    ),
    ModuleCase(
        "a start function calling the host",
        "(i64.const 0)",
        Rejected("", "the module cannot start: the guest trapped"),
        extra="(func $early (call $log (i32.const 0) (i32.const 5))) (start $early)",
    ),
]
