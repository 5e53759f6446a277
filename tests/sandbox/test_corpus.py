"""The escape corpus (tests/sandbox/escapes) against every backend, through one real pool.

Every Python case runs on ``restricted`` and on ``wasm`` (CPython in Wasm); the core-module
cases run on ``wasm-module``. A victim tenant's instance runs in the same pool first, with a
secret in its vars: no attacker outcome may show it, nor the platform's secret (an environment
variable of this process), nor anything of the host process.
"""

from __future__ import annotations

import collections
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Artifact, Done, Failed, Outcome, SandboxPool, Suspended
from sandbox.restricted._policy import BUILTINS, MODULES, guarded_getattr
from sandbox.wasm._engine import cache_dir
from tests.sandbox.escapes import (
    Case,
    Contained,
    Expectation,
    Raises,
    Rejected,
    Returns,
    Suspends,
    python_cases,
    workflow_source,
)
from tests.sandbox.escapes.core_modules import MODULE_CASES, ModuleCase
from tests.sandbox.harness import Instance, artifact
from tests.wasm_guests import module_artifact, python_artifact, python_runtime
from treadle.errors import CodeInvalid

VICTIM_VAR = "victim-var-0e5c"
ATTACKER = "attacker"
REPO = str(Path(__file__).resolve().parents[2])
# What would show that a case reached outside its sandbox: the platform's secret, another
# tenant's data, the host process's paths and modules, and the worker's own environment.
HOST_MARKERS = (
    "hunter2", VICTIM_VAR, REPO, "sandbox._", "/RestrictedPython/", "site-packages",
    "TREADLE_CACHE_DIR", str(cache_dir()),
)  # fmt: skip
PYTHON = python_cases()
VICTIM = """
from treadle import WorkflowEntrypoint

class Victim(WorkflowEntrypoint):
    def run(self, event, step):
        return step.do("keep", lambda: self.env.vars["token"])
"""


@pytest.fixture(scope="module", autouse=True)
def victim(pool: SandboxPool) -> Iterator[None]:
    """Another tenant's instances, on both Python backends, in the same pool."""
    python_runtime()
    for made in (artifact(VICTIM), python_artifact(VICTIM.strip() + "\n")):
        wf = _instance(made, vars={"token": VICTIM_VAR})
        outcome = wf.through(pool, "victim")
        assert isinstance(outcome, Done) and outcome.output == VICTIM_VAR, outcome
    yield


def _instance(made: Artifact, **options: object) -> Instance:
    wf = Instance("", **options)  # type: ignore[arg-type]
    wf.artifact = made
    return wf


def _check(outcome: Outcome, expected: Expectation) -> None:
    shown = repr(outcome)
    leaked = [marker for marker in HOST_MARKERS if marker in shown]
    assert not leaked, f"the outcome shows {leaked}: {shown[:2000]}"
    if isinstance(expected, Raises):
        assert isinstance(outcome, Failed), outcome
        assert outcome.error["name"] in expected.names, outcome.error
        assert expected.message in outcome.error["message"], outcome.error
    elif isinstance(expected, Returns):
        assert isinstance(outcome, Done), outcome
        assert outcome.output == expected.output
    elif isinstance(expected, Suspends):
        assert isinstance(outcome, Suspended), outcome
    else:
        assert isinstance(expected, Contained)


def _run(pool: SandboxPool, made: Artifact, expected: Expectation) -> None:
    if isinstance(expected, Rejected):
        with pytest.raises(CodeInvalid) as caught:
            pool.validate(ATTACKER, made)
        lines = made.source.splitlines()
        assert any(
            expected.fragment in lines[p["line"] - 1] and expected.message in p["message"]
            for p in caught.value.problems
        ), caught.value.problems
        # Never validated, it fails when it runs (restricted workers refuse to compile it).
        outcome = _instance(made).through(pool, ATTACKER)
        assert isinstance(outcome, Failed), outcome
        assert made.sandbox != "restricted" or outcome.error["name"] == "CodeInvalid", outcome
        _check(outcome, Contained())
        return
    pool.validate(ATTACKER, made)  # accepted at upload: it fails, if at all, when it runs
    _check(_instance(made).through(pool, ATTACKER), expected)


def _ids(cases: list[Case]) -> list[str]:
    return [case.id for case in cases]


@pytest.mark.parametrize("case", PYTHON, ids=_ids(PYTHON))
def test_restricted(pool: SandboxPool, case: Case) -> None:
    _run(pool, artifact(workflow_source(case)), case.restricted)


@pytest.mark.parametrize("case", PYTHON, ids=_ids(PYTHON))
def test_wasm_python(pool: SandboxPool, case: Case) -> None:
    _run(pool, python_artifact(workflow_source(case)), case.wasm)


@pytest.mark.parametrize("case", MODULE_CASES, ids=[c.id for c in MODULE_CASES])
def test_core_module(pool: SandboxPool, case: ModuleCase) -> None:
    _run(pool, module_artifact(case.wasm()), case.expected)


_DANGEROUS = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)


def test_no_public_name_of_an_allowed_module_leads_to_the_host() -> None:
    """Walk every public attribute (as restricted code may read them) from the builtins and
    the allowlisted modules, four levels deep: no real module, frame, code object, traceback,
    nor a ``str.format`` is on the way."""
    facades = {id(m) for m in MODULES.values()}
    roots = [*MODULES.items(), *((f"builtins.{n}", v) for n, v in BUILTINS.items())]
    queue = collections.deque((name, value, 0) for name, value in roots)
    seen: set[int] = set()
    found = []
    while queue:
        name, value, depth = queue.popleft()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, _DANGEROUS) and id(value) not in facades:
            found.append(name)
        elif getattr(value, "__qualname__", "") in ("str.format", "str.format_map"):
            found.append(name)
        elif depth < 4:
            queue.extend(_public_attributes(name, value, depth + 1))
    assert len(seen) > 1000  # the walk did walk
    assert found == []


def _public_attributes(name: str, value: object, depth: int) -> Iterator[tuple[str, object, int]]:
    for attribute in dir(value):
        if attribute.startswith("_"):
            continue
        try:
            yield f"{name}.{attribute}", guarded_getattr(value, attribute), depth
        except Exception:  # refused by the guard, or a property that fails on a class
            continue
