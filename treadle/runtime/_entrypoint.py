"""The base class of tenant workflows."""

from __future__ import annotations

from typing import Any


class WorkflowEntrypoint:
    """Subclass this and implement ``run(self, event, step)``.

    ``self.env`` holds the tenant's bindings (``vars``, ``fetch``, ``workflows``); the platform
    sets it before calling ``run``.
    """

    env: Any = None

    def __init__(self, env: Any = None) -> None:
        self.env = env

    def __repr__(self) -> str:
        # Not object's: that one shows the host's module name and a heap address.
        return f"<workflow {type(self).__name__}>"

    def run(self, event: Any, step: Any) -> Any:
        raise NotImplementedError("a workflow must implement run(self, event, step)")
