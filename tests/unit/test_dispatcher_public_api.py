"""The public names of the packages of this layer, and of ``treadle``, are exactly their
``__all__``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(value, types.ModuleType)  # submodules, e.g. dispatcher.__main__
    }


PACKAGES = [
    "tenants",
    "loader",
    "playground",
    "dispatcher",
    "dispatcher.http",
    "treadle",
    "treadle.client",
    "treadle.errors",
    "treadle.runtime",
    "treadle.testing",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_exactly_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == _public_names(module)


def test_the_client_commands_do_not_load_the_server_stack() -> None:
    """``treadle instances list`` and the like start fast: no uvicorn, SQLAlchemy or engine."""
    probe = (
        "import sys\n"
        "from treadle.client._main import parser\n"
        "argv = ['instances', 'list', 'checkout']\n"
        "parser(argv).parse_args(argv)\n"
        "heavy = sorted(m for m in ('uvicorn', 'sqlalchemy', 'engine', 'sandbox', 'storage')"
        " if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
