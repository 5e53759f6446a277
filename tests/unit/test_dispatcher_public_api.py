"""The public names of the packages of this layer, and of ``treadle``, are exactly their
``__all__``."""

from __future__ import annotations

import importlib
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


@pytest.mark.parametrize("package", ["tenants", "loader", "dispatcher", "playground"])
def test_all_names_exactly_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == _public_names(module)


def test_treadle_all_is_exactly_its_public_names_the_lazy_ones_too() -> None:
    import treadle

    for name in treadle.__all__:
        getattr(treadle, name)  # the client's names are imported on first use
    assert set(treadle.__all__) == _public_names(treadle)
    with pytest.raises(AttributeError):
        treadle.Nope  # noqa: B018
