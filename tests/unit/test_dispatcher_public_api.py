"""The public names of the packages of this layer, and of ``treadle``, are exactly their
``__all__``."""

from __future__ import annotations

import importlib
import types

import pytest


@pytest.mark.parametrize("package", ["tenants", "loader", "dispatcher", "playground"])
def test_all_names_exactly_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(value, types.ModuleType)  # submodules, e.g. dispatcher.__main__
    }
    assert set(module.__all__) == public


def test_treadle_all_is_exactly_its_public_names_the_lazy_ones_too() -> None:
    import treadle

    for name in treadle.__all__:
        getattr(treadle, name)  # the client's names are imported on first use
    public = {
        name
        for name, value in vars(treadle).items()
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(value, types.ModuleType)  # submodules, e.g. treadle.errors
    }
    assert set(treadle.__all__) == public
    with pytest.raises(AttributeError):
        treadle.Nope  # noqa: B018
