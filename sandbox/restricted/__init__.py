"""The ``restricted`` backend: tenant Python compiled by RestrictedPython and run in the worker
process under guards (``_policy``: the allowed modules, names and attribute rules).

Only the worker processes load it (:data:`sandbox._backends.SANDBOXES` names it by module), so
nothing is exported here.
"""

from __future__ import annotations

__all__: list[str] = []
