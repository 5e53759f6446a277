"""Validation of tenant code: every problem, each with its line and column (1-based)."""

from __future__ import annotations

import pytest

from sandbox.restricted._backend import RestrictedBackend
from tests.sandbox.harness import source
from treadle.errors import CodeInvalid


def check(text: str, class_name: str | None = None) -> str:
    program = RestrictedBackend().compile(source(text), class_name)
    program.check()
    return program.class_name


def problems(text: str, class_name: str | None = None) -> list[tuple[int, int, str]]:
    with pytest.raises(CodeInvalid) as caught:
        check(text, class_name)
    return [(p["line"], p["column"], p["message"]) for p in caught.value.problems]


GOOD = """
import json
import treadle
from treadle import WorkflowEntrypoint as Base

class Helper:
    pass

class Base2(Base):
    pass

class Order(Base2):
    def run(self, event, step):
        return json.dumps(event.payload)
"""


def test_a_valid_workflow_names_its_class() -> None:
    assert check(GOOD) == "Order"
    assert check(GOOD, "Order") == "Order"
    assert (
        check("import treadle\nclass W(treadle.WorkflowEntrypoint):\n  def run(self, e, s): pass")
        == "W"
    )


def test_a_syntax_error_has_its_position() -> None:
    assert problems("class W:\n    def run(self, event, step)\n        pass\n") == [
        (2, 31, "SyntaxError: expected ':'")
    ]


def test_every_violation_and_forbidden_import_is_listed_in_order() -> None:
    found = problems(
        """
        import os
        from treadle import WorkflowEntrypoint, Client
        from . import sibling
        import string, json

        class W(WorkflowEntrypoint):
            def run(self, event, step):
                x = event.__class__
                exec("1")
                _hidden = 1
                return x
        """
    )
    lines = [(line, column) for line, column, _ in found]
    assert lines == sorted(lines)
    messages = {(line, column): message for line, column, message in found}
    assert messages[(1, 1)].startswith("import of 'os' is not allowed (allowed modules: base64,")
    assert messages[(2, 1)] == "'treadle' has no 'Client' available to workflow code"
    assert messages[(3, 1)] == "relative imports are not allowed"
    assert messages[(4, 1)].startswith("import of 'string' is not allowed")
    assert '"__class__" is an invalid attribute name' in messages[(8, 13)]
    assert messages[(9, 9)] == "Exec calls are not allowed."
    assert '"_hidden" is an invalid variable name' in messages[(10, 9)]


@pytest.mark.parametrize(
    ("text", "class_name", "expected"),
    [
        ("x = 1\n", None, (1, 1, "no workflow class found")),
        (
            "from treadle import WorkflowEntrypoint\n"
            "class A(WorkflowEntrypoint):\n    def run(self, e, s): pass\n"
            "class B(WorkflowEntrypoint):\n    def run(self, e, s): pass\n",
            None,
            (4, 1, "several workflow classes (A, B): set class_name to one"),
        ),
        ("x = 1\n", "Missing", (1, 1, "class 'Missing' not found")),
        ("class Plain:\n    def run(self, e, s): pass\n", "Plain", (1, 1, "does not derive")),
        (
            "from treadle import WorkflowEntrypoint\nclass W(WorkflowEntrypoint):\n    pass\n",
            "W",
            (2, 1, "class 'W' has no method run(self, event, step)"),
        ),
        (
            "from treadle import WorkflowEntrypoint\nclass W(WorkflowEntrypoint):\n"
            "    def run(self):\n        pass\n",
            None,
            (3, 5, "run must be defined as run(self, event, step)"),
        ),
    ],
)
def test_the_entry_class_must_be_clear(
    text: str, class_name: str | None, expected: tuple[int, int, str]
) -> None:
    ((line, column, message),) = problems(text, class_name)
    assert (line, column) == expected[:2]
    assert expected[2] in message


def test_several_candidates_are_fine_with_a_class_name() -> None:
    text = (
        "from treadle import WorkflowEntrypoint\n"
        "class A(WorkflowEntrypoint):\n    def run(self, e, s): pass\n"
        "class B(A):\n    pass\n"
    )
    assert check(text, "B") == "B"


def test_module_level_errors_are_found_by_running_the_module() -> None:
    found = problems(
        """
        from treadle import WorkflowEntrypoint

        LIMIT = undefined_name + 1

        class W(WorkflowEntrypoint):
            def run(self, event, step):
                return LIMIT
        """
    )
    assert found == [
        (3, 1, "running the module failed: NameError: name 'undefined_name' is not defined")
    ]


@pytest.mark.parametrize(
    "bomb", ["x = " + "(" * 500 + ")" * 500, "x = " + "-" * 200000 + "1", "a\x00b = 1"]
)
def test_compiler_bombs_are_problems_not_crashes(bomb: str) -> None:
    ((line, _, message),) = problems(bomb + "\n")
    assert line == 1 and message


def test_oversized_source_is_refused() -> None:
    ((_, _, message),) = problems("#" * (1024 * 1024 + 1))
    assert "over 1048576 characters" in message
