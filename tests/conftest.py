"""What the whole suite shares: which tests ``scripts/test`` runs alone.

Most tests may share the machine with others (``scripts/test`` runs them on several
processes). Those marked ``serial`` may not: they measure a victim's latency while a hostile
tenant floods the server, or crash servers and databases on a clock. Every test of the
directories below is one of them; elsewhere a test says so with ``@pytest.mark.serial``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_ALONE = ("hostile", "chaos")
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(_HERE).parts if item.path.is_relative_to(_HERE) else ()
        if parts and parts[0] in _ALONE:
            item.add_marker(pytest.mark.serial)
