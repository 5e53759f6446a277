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


@pytest.mark.parametrize("package", ["tenants", "loader", "playground"])
def test_all_names_exactly_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == _public_names(module)


@pytest.mark.parametrize("package", ["treadle", "dispatcher"])
def test_all_is_exactly_the_public_names_the_lazy_ones_too(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        getattr(module, name)  # imported on first use
    assert set(module.__all__) == _public_names(module)
    with pytest.raises(AttributeError):
        module.Nope  # noqa: B018


def test_the_client_commands_do_not_load_the_server_stack() -> None:
    """``treadle instances list`` and the like start fast: no uvicorn, SQLAlchemy or engine."""
    probe = (
        "import sys\n"
        "from dispatcher._cli import _parser\n"
        "_parser().parse_args(['instances', 'list', 'checkout'])\n"
        "heavy = sorted(m for m in ('uvicorn', 'sqlalchemy', 'engine', 'sandbox', 'storage')"
        " if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
