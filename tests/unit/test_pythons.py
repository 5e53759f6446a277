"""The supported Pythons are declared once, consistently: ``requires-python`` admits exactly the
versions of the classifiers (which scripts/test and scripts/smoke read), and the tools check
the code against the oldest."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())


def _minor(version: str) -> int:
    major, minor = version.split(".")
    assert major == "3"
    return int(minor)


def _classified() -> list[int]:
    classifiers = PYPROJECT["project"]["classifiers"]
    found = [re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c) for c in classifiers]
    return sorted(_minor(m.group(1)) for m in found if m)


def test_requires_python_admits_exactly_the_classified_versions() -> None:
    bounds = re.fullmatch(r">=(3\.\d+),<(3\.\d+)", PYPROJECT["project"]["requires-python"])
    assert bounds is not None
    assert _classified() == list(range(_minor(bounds[1]), _minor(bounds[2])))


def test_this_python_is_supported_and_the_tools_target_the_oldest() -> None:
    oldest = _classified()[0]
    assert sys.version_info[:2] in [(3, minor) for minor in _classified()]
    assert PYPROJECT["tool"]["mypy"]["python_version"] == f"3.{oldest}"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py3{oldest}"
