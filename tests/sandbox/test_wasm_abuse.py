"""The abuse corpus against the Wasm backends: endless loops, huge allocations, deep recursion,
reading host files, native modules. Each ends as a clear error, the worker survives the guest,
and a bystander tenant's replays in the same pool keep succeeding."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandbox import Artifact, Done, Failed, SandboxPool, Suspended
from tests.sandbox.harness import SMALL, Instance, alongside, idle_pids, named, source
from tests.sandbox.test_resources import (
    GROWING_LIST,
    HUGE_STRING,
    INFINITE_LOOP,
    SWALLOWING_LOOP,
    in_a_step,
)
from tests.wasm_guests import module_artifact, python_artifact, python_runtime, wat

CPU_LIMIT = {
    "name": "ResourceLimitExceeded",
    "message": "CPU time limit exceeded (step_cpu_ms=1000)",
}


def python(text: str) -> Artifact:
    python_runtime()
    return python_artifact(source(text))


def instance(artifact: Artifact, instance_id: str = "abuse-1") -> Instance:
    wf = Instance("", instance_id=instance_id, limits=SMALL)
    wf.artifact = artifact
    return wf


def attempt_error(wf: Instance, name: str = "abuse") -> dict[str, Any]:
    record = wf.journal[(name, 1)]
    assert record["status"] == "errored", record
    error: dict[str, Any] = record["attempts"][-1]["error"]
    return error


# -- CPython in Wasm ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [INFINITE_LOOP, SWALLOWING_LOOP], ids=["loop", "swallowing"])
def test_an_endless_step_body_runs_out_of_cpu_and_the_worker_survives(
    pool: SandboxPool, body: str
) -> None:
    wf = instance(python(in_a_step(body)))
    started = time.monotonic()
    first = alongside(pool, lambda: wf.through(pool, "wasm-abuser"))
    assert time.monotonic() - started < 4.0
    assert isinstance(first, Suspended)
    assert attempt_error(wf) == CPU_LIMIT
    pids = idle_pids(pool, "wasm-abuser")
    final = wf.through(pool, "wasm-abuser")
    assert isinstance(final, Failed) and named(final.error) == CPU_LIMIT
    assert idle_pids(pool, "wasm-abuser") == pids  # the trap stopped the guest, not the worker


def test_an_endless_loop_outside_steps_fails_the_instance(pool: SandboxPool) -> None:
    wf = instance(
        python(
            """
            from treadle import WorkflowEntrypoint

            class Spin(WorkflowEntrypoint):
                def run(self, event, step):
                    while True:
                        pass
            """
        )
    )
    outcome = wf.through(pool, "wasm-abuser")
    assert isinstance(outcome, Failed)
    assert outcome.error == {
        "name": "ResourceLimitExceeded",
        "message": "CPU time limit exceeded (step_cpu_ms=1000), while run() was executing "
        "outside a step body",
    }


# 10**10 does not even fit a wasm32 index (OverflowError): ask for 1 GB.
HUGE_WASM_STRING = HUGE_STRING.replace("10 ** 10", "10 ** 9")


@pytest.mark.parametrize("body", [HUGE_WASM_STRING, GROWING_LIST], ids=["a*10**9", "growing list"])
def test_huge_allocations_are_a_memory_error(pool: SandboxPool, body: str) -> None:
    wf = instance(python(in_a_step(body)))
    alongside(pool, lambda: wf.through(pool, "wasm-hog"))
    assert attempt_error(wf) == {"name": "MemoryError", "message": "out of memory (memory_mb=256)"}
    assert isinstance(wf.through(pool, "wasm-hog"), Failed)


def test_deep_recursion_is_a_recursion_error_or_a_limit(pool: SandboxPool) -> None:
    body = (
        "            import sys\n"
        "            sys.setrecursionlimit(10 ** 6)\n"
        "            def down(n):\n"
        "                return down(n + 1)\n"
        "            return down(0)"
    )
    wf = instance(python(in_a_step(body)))
    wf.through(pool, "wasm-abuser")
    assert attempt_error(wf)["name"] in ("RecursionError", "MemoryError", "WasmTrap", *CPU_LIMIT)
    plain = instance(python(in_a_step("            def down(n):\n                return down(n)\n"
                                      "            return down(0)")))  # fmt: skip
    plain.through(pool, "wasm-abuser")
    assert attempt_error(plain)["name"] == "RecursionError"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("            return open('/etc/passwd').read()", "FileNotFoundError"),
        ("            import os\n            return os.listdir('/')", "FileNotFoundError"),
        ("            import socket", "ModuleNotFoundError"),
        ("            import ctypes", "ModuleNotFoundError"),
        ("            import _posixsubprocess", "ModuleNotFoundError"),
    ],
    ids=["open /etc/passwd", "listdir /", "socket", "ctypes", "_posixsubprocess"],
)
def test_the_host_is_out_of_reach(pool: SandboxPool, body: str, error: str) -> None:
    wf = instance(python(in_a_step(body)))
    wf.through(pool, "wasm-prober")
    assert attempt_error(wf)["name"] == error


def test_no_environment_and_no_blocking(pool: SandboxPool) -> None:
    wf = instance(
        python(
            """
            from treadle import WorkflowEntrypoint
            import os, sys

            class Probe(WorkflowEntrypoint):
                def run(self, event, step):
                    return {"environ": dict(os.environ), "argv": sys.argv}
            """
        )
    )
    outcome = wf.through(pool, "wasm-prober")
    assert isinstance(outcome, Done) and outcome.output == {"environ": {}, "argv": []}
    sleeper = instance(python(in_a_step("            import time\n            time.sleep(1)")))
    sleeper.through(pool, "wasm-prober")
    assert attempt_error(sleeper)["name"] == "WasmTrap"
    assert "use step.sleep" in attempt_error(sleeper)["message"]


def test_clock_and_random_are_the_same_on_every_replay(pool: SandboxPool) -> None:
    text = """
        from treadle import WorkflowEntrypoint
        import os, random, time

        class Dice(WorkflowEntrypoint):
            def run(self, event, step):
                seen = [time.time(), random.random(), os.urandom(8).hex()]
                step.sleep("nap", 5)
                return seen
        """
    wf = instance(python(text))
    first = wf.through(pool, "wasm-dice")
    assert isinstance(first, Suspended)
    wf.now += 10
    second = wf.through(pool, "wasm-dice")
    again = instance(python(text))
    again.now = wf.now
    again.journal = dict(wf.journal)
    third = again.through(pool, "wasm-dice")
    assert isinstance(second, Done) and isinstance(third, Done)
    assert second.output == third.output
    assert second.output[0] == wf.request().created_at  # the clock reads the creation time
    other = instance(python(text), instance_id="abuse-2")
    other.journal = {k: v for k, v in wf.journal.items()}
    other.now = wf.now
    assert other.through(pool, "wasm-dice").output[1:] != second.output[1:]  # type: ignore[union-attr]


# -- core modules -------------------------------------------------------------------------------

ABI = """
  (import "treadle" "step_begin" (func $step_begin (param i32 i32 i32 i32) (result i32)))
  (import "treadle" "step_end" (func $step_end (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "abuse")
  (data (i32.const 16) "1")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
"""


def module(body: str, extra: str = "") -> Artifact:
    return module_artifact(
        wat(f'(module {ABI} {extra} (func (export "run") (param i32 i32) (result i64) {body}))')
    )


IN_A_STEP = """
    (if (i32.eq (call $step_begin (i32.const 0) (i32.const 5) (i32.const 512) (i32.const 64))
                (i32.const -1))
      (then {body} (call $step_end (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 1))))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1))
"""


def test_an_endless_loop_in_a_module_step_runs_out_of_cpu(pool: SandboxPool) -> None:
    wf = instance(module(IN_A_STEP.format(body="(loop $spin (br $spin))")))
    started = time.monotonic()
    first = alongside(pool, lambda: wf.through(pool, "module-abuser"))
    assert time.monotonic() - started < 4.0
    assert isinstance(first, Suspended)
    record = wf.journal[("abuse", 1)]
    assert record["status"] == "waiting"  # the default retries: the next replay tries again
    assert record["attempts"][0]["error"] == CPU_LIMIT


def test_an_endless_loop_outside_module_steps_fails_the_instance(pool: SandboxPool) -> None:
    wf = instance(module("(loop $spin (br $spin)) (i64.const 0)"))
    outcome = wf.through(pool, "module-abuser")
    assert isinstance(outcome, Failed)
    assert outcome.error["name"] == "ResourceLimitExceeded"


def test_growing_memory_past_the_limit_fails_in_the_guest(pool: SandboxPool) -> None:
    # memory.grow returns -1 past the limit (60000 pages: 3.7 GiB); the module returns -1.
    probe = module_artifact(
        wat(
            f"""(module {ABI}
              (data (i32.const 32) "-1")
              (func (export "run") (param i32 i32) (result i64)
                (if (i32.eq (memory.grow (i32.const 60000)) (i32.const -1))
                  (then (return (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 2)))))
                (unreachable)))"""
        )
    )
    outcome = instance(probe).through(pool, "module-hog")
    assert isinstance(outcome, Done) and outcome.output == -1


def test_deep_recursion_in_a_module_is_a_trap(pool: SandboxPool) -> None:
    extra = (
        "(func $down (param i32) (result i32) (call $down (i32.add (local.get 0) (i32.const 1))))"
    )
    wf = instance(module(IN_A_STEP.format(body="(drop (call $down (i32.const 0)))"), extra))
    wf.through(pool, "module-abuser")
    error = wf.journal[("abuse", 1)]["attempts"][0]["error"]
    assert error["name"] == "WasmTrap" and "stack" in error["message"]


@pytest.mark.parametrize(
    ("imports", "problem"),
    [
        (
            '(import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 '
            "i64 i32 i32) (result i32)))",
            "import wasi_snapshot_preview1.path_open is not allowed",
        ),
        ('(import "env" "memory" (memory 1))', "import env.memory is not allowed"),
        (
            '(import "treadle" "sleep" (func (param i32 i32 i32)))',
            "import treadle.sleep has type (i32, i32, i32); the ABI says (i32, i32, i64)",
        ),
    ],
    ids=["wasi path_open", "imported memory", "wrong signature"],
)
def test_a_module_reaching_for_anything_else_is_refused(
    pool: SandboxPool, imports: str, problem: str
) -> None:
    from treadle.errors import CodeInvalid

    artifact = module_artifact(wat(f"(module {imports} {ABI.split('(memory')[0]})"))
    with pytest.raises(CodeInvalid) as caught:
        pool.validate("module-prober", artifact)
    messages = [p["message"] for p in caught.value.problems]
    assert any(message.startswith(problem) for message in messages), messages
    assert "the module must export its linear memory as 'memory'" in messages


def test_abi_misuse_is_an_error_that_names_it(pool: SandboxPool) -> None:
    # step_end without step_begin, and a pointer outside linear memory
    end = "(call $step_end (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 1))"
    wf = instance(module(f"{end} (i64.const 0)"))
    outcome = wf.through(pool, "module-prober")
    assert isinstance(outcome, Failed) and outcome.error["name"] == "WasmAbiError"
    begin = "(call $step_begin (i32.const 999999) (i32.const 5) (i32.const 0) (i32.const 0))"
    wild = instance(module(f"(drop {begin}) (i64.const 0)"))
    outcome = wild.through(pool, "module-prober")
    assert isinstance(outcome, Failed) and outcome.error["name"] == "WasmAbiError"
    assert "outside linear memory" in outcome.error["message"]


def test_a_memory_limit_too_small_for_the_runtime_says_so(pool: SandboxPool) -> None:
    from sandbox import Limits

    wf = instance(python("from treadle import WorkflowEntrypoint\n"))
    wf.limits = Limits(memory_mb=128, step_cpu_ms=1000)
    outcome = wf.through(pool, "wasm-small")
    assert isinstance(outcome, Failed) and outcome.error["name"] == "CodeInvalid"
    assert "memory_mb=128 is too small for the wasm sandbox" in outcome.error["message"]


def test_workers_map_compiled_code_from_the_cache(pool: SandboxPool) -> None:
    from sandbox.wasm._build import runtime_path
    from sandbox.wasm._engine import module_key, wasm_cache_dir
    from tests.wasm_guests import conformance_module

    wasm = conformance_module()
    wf = instance(module_artifact(wasm))
    wf.params = {"scenario": "steps"}
    assert isinstance(wf.through(pool, "cache-user"), Done)
    cached = wasm_cache_dir("module") / "modules" / f"{module_key(wasm)}.cwasm"
    assert cached.exists()
    py = instance(python("from treadle import WorkflowEntrypoint\n" + GOOD_RUN))
    assert isinstance(py.through(pool, "cache-user-py"), Done)
    for tenant, path in (("cache-user", cached), ("cache-user-py", runtime_path())):
        (pid,) = idle_pids(pool, tenant)
        with open(f"/proc/{pid}/maps") as maps:
            assert path.name in maps.read()  # mapped from the cache, not compiled again


GOOD_RUN = """
class Good(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("a", lambda: 1)
"""


# A second step name at offset 48, and a body that misuses the ABI while step 'abuse' runs.
OTHER = '(data (i32.const 48) "other")'
NESTED_BEGIN = (
    "(drop (call $step_begin (i32.const 48) (i32.const 5) (i32.const 512) (i32.const 64)))"
)
END_OTHER = "(call $step_end (i32.const 48) (i32.const 5) (i32.const 16) (i32.const 1))"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (NESTED_BEGIN, "ABI misuse: step_begin('other') called inside step 'abuse'"),
        (END_OTHER, "ABI misuse: step_end('other') called inside step 'abuse'"),
    ],
    ids=["nested step_begin", "step_end of another step"],
)
def test_abi_misuse_inside_a_step_fails_that_step(
    pool: SandboxPool, body: str, message: str
) -> None:
    wf = instance(module(IN_A_STEP.format(body=body), OTHER))
    outcome = wf.through(pool, "module-misuser")
    error = {"name": "WasmAbiError", "message": message}
    assert attempt_error(wf) == error  # non-retryable: the step failed for good at once
    assert isinstance(outcome, Suspended)
    (worker,) = idle_pids(pool, "module-misuser")  # the worker survived the misuse
    final = wf.through(pool, "module-misuser")
    assert isinstance(final, Failed) and final.error == error  # run() did not catch it
    assert idle_pids(pool, "module-misuser") == [worker]
