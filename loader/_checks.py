"""Checking uploaded code off the request path: turns from :class:`Admission`, threads of its own.

A check waits for a sandbox worker's answer for up to ``check_seconds``. Run on the thread pool
that serves every request, fifty uploads of a module that never finishes loading would hold
fifty of its threads, and every other tenant's reads would queue behind them. Here a check runs
on one of ``checks`` threads that serve nothing else, and only once :class:`Admission` gave it
a turn; the request waits on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from loader._admission import Admission, UploadLimits
from sandbox import Artifact, NotReady
from treadle.errors import UploadBusy, WasmBuilding, WasmUnavailable

_log = logging.getLogger("treadle.loader")


class Validator(Protocol):
    """What checks code before it is stored: ``sandbox.SandboxPool`` in production.

    ``validate`` returns the entry class name, raises ``CodeInvalid`` with the problems found
    (the module not loaded within ``timeout`` seconds among them), ``NotReady`` at once while
    the sandbox the code needs is not ready (the Python-in-Wasm runtime building, or its build
    failed), and ``RuntimeError`` when it could not run the check at all (no sandbox worker
    could be started).
    """

    def validate(self, tenant: str, artifact: Artifact, *, timeout: float | None = None) -> str: ...


class Checks:
    """Checks of tenants' uploads, a bounded number at once, each within its deadline."""

    def __init__(self, validator: Validator, limits: UploadLimits) -> None:
        self._validator = validator
        self._limits = limits
        self._admission = Admission(limits)
        self._threads = ThreadPoolExecutor(limits.checks, thread_name_prefix="treadle-check")

    async def check(self, tenant_id: int, tenant: str, artifact: Artifact) -> str:
        """The entry class of ``artifact``, once checked in one of the tenant's sandboxes.

        Raises ``CodeInvalid`` for code that is not valid or whose module did not finish
        loading in time, :class:`UploadBusy` when the tenant has too many uploads being checked
        already, or none could be checked now, :class:`WasmBuilding` while the Python-in-Wasm
        runtime is being built and :class:`WasmUnavailable` when its build failed.
        """
        await self._admission.enter(tenant_id)
        try:
            job = asyncio.get_running_loop().run_in_executor(
                self._threads, self._check, tenant, artifact
            )
        except BaseException:
            self._admission.leave(tenant_id)
            raise
        # The turn is the check's, not the request's: a client that goes away does not free
        # it while its check still runs.
        job.add_done_callback(lambda done: self._finished(tenant_id, done))
        return await asyncio.shield(job)

    def close(self) -> None:
        """Stop taking checks; those running finish (each within its deadline)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _check(self, tenant: str, artifact: Artifact) -> str:
        try:
            return self._validator.validate(tenant, artifact, timeout=self._limits.check_seconds)
        except NotReady as exc:
            raise _not_ready(exc) from None
        except RuntimeError as exc:
            # Not the code's fault (the pool is closing, or a fork was refused); the tenant may
            # try again. One line: an attack could make many.
            _log.warning("checking an upload of tenant %r failed: %s", tenant, exc)
            message = "no sandbox worker could be started to check the code; try again shortly"
            raise UploadBusy(message, retry_after=self._limits.retry_after) from None

    def _finished(self, tenant_id: int, job: asyncio.Future[str]) -> None:
        self._admission.leave(tenant_id)
        if not job.cancelled():
            job.exception()  # retrieved: a request that went away never reads it


def _not_ready(exc: NotReady) -> WasmBuilding | WasmUnavailable:
    # Nothing is kept of the upload: the client sends it again (simpler, and what it sees is
    # what happened), and the server holds no uploads for a build that may yet fail.
    if exc.seconds_left is None:
        return WasmUnavailable(str(exc))
    return WasmBuilding(str(exc), retry_after=exc.seconds_left)
