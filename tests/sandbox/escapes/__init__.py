"""The escape corpus: one tenant workflow per known sandbox escape technique, with the outcome
each backend must give.

A Python case is the body of ``run(self, event, step)`` (and optional module-level code before
the workflow class); it tries one technique and, should the technique work, returns what it
reached. The same source runs on the ``restricted`` backend (RestrictedPython) and on the
``wasm`` backend (CPython in Wasm), each with its own expectation:

- :class:`Rejected`: refused at upload, the problem pointing at the line that holds ``fragment``
  (and the worker refuses to compile it too);
- :class:`Raises`: the instance fails with one of the error ``names``;
- :class:`Returns`: it completes with exactly ``output`` (behaviour that is allowed, pinned);
- :class:`Suspends`: it stays suspended, whatever the code does with the suspend;
- :class:`Contained`: any outcome, as long as nothing of the host shows in it.

Whatever the expectation, no outcome may contain the platform's secret, another tenant's vars
or anything of the host process (its paths and module names): see ``tests/sandbox/test_corpus``.
``modules.py`` holds the cases for core Wasm modules.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTAINED",
    "Case",
    "Contained",
    "Expectation",
    "Raises",
    "Rejected",
    "Returns",
    "Suspends",
    "python_cases",
    "workflow_source",
]

HEADER = """\
import base64, collections, datetime, decimal, fractions, hashlib, itertools, json, math
import random, re, statistics, textwrap
import treadle
from treadle import NonRetryableError, StepError, WaitTimeout, WorkflowEntrypoint
"""


@dataclass(frozen=True)
class Rejected:
    fragment: str
    message: str = ""


@dataclass(frozen=True)
class Raises:
    names: tuple[str, ...]
    message: str = ""

    def __init__(self, *names: str, message: str = "") -> None:
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "message", message)


@dataclass(frozen=True)
class Returns:
    output: Any


@dataclass(frozen=True)
class Suspends:
    pass


@dataclass(frozen=True)
class Contained:
    pass


Expectation = Rejected | Raises | Returns | Suspends | Contained
CONTAINED = Contained()


@dataclass(frozen=True)
class Case:
    id: str
    body: str
    restricted: Expectation
    wasm: Expectation = CONTAINED
    prelude: str = ""


def workflow_source(case: Case) -> str:
    """The whole tenant module of a Python case."""
    body = textwrap.indent(textwrap.dedent(case.body).strip(), " " * 8)
    prelude = textwrap.dedent(case.prelude).strip()
    return (
        f"{HEADER}{prelude}\n\n\nclass Probe(WorkflowEntrypoint):\n"
        f"    def run(self, event, step):\n{body}\n        return 'escaped'\n"
    )


def python_cases() -> list[Case]:
    """Every Python case of the corpus, in a stable order; ids are unique."""
    from tests.sandbox.escapes import (
        abuse,
        builtin_names,
        classes,
        exceptions,
        formatting,
        frames,
        grammar,
        host,
        host_secrets,
        modules,
        names,
    )

    themes = (
        formatting, frames, exceptions, names, classes, builtin_names, modules, host,
        host_secrets, abuse, grammar,
    )  # fmt: skip
    cases = [case for theme in themes for case in theme.CASES]
    ids = [case.id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise AssertionError(f"duplicate case ids in the escape corpus: {duplicates}")
    return cases
