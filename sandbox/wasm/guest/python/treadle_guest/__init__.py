"""The glue of the Python-in-Wasm guest around ``treadle.runtime``: a runtime whose replay
operations are host calls (``_runtime``), the host interface (``_host``) and the loading of
tenant source (``_source``). ``app.py`` exports :func:`check` and :func:`run` to the host."""

from __future__ import annotations

import sys

from ._host import bind
from ._source import check, run

__all__ = ["bind", "check", "run"]

sys.setrecursionlimit(1000)
