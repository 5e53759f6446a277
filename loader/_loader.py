"""Tenant code: validate an upload, name it by its content, store it, hand it to the engine.

This is the Worker Loader of the platform: the engine asks for the code of an exact
(tenant, workflow, version) and gets an :class:`sandbox.Artifact`; because versions are
content hashes and never change, artifacts are kept in an in-process LRU cache for good.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import TypedDict

from starlette.concurrency import run_in_threadpool

from loader._admission import UploadLimits
from loader._checks import Checks, Validator
from loader._store import CodeStore, Version, WorkflowView
from loader._upload import Upload
from sandbox import Artifact
from storage import Clock, Database
from treadle.errors import CodeInvalid, InvalidInput, NotFound, TooLarge
from treadle.runtime import JSONObject

MAX_NAME = 64
MAX_SOURCE_BYTES = 1024 * 1024
MAX_MODULE_BYTES = 8 * 1024 * 1024
WASM_MODULE = "wasm-module"  # the sandbox backend of core modules; tenants see "wasm"
_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*")


class Uploaded(TypedDict):
    """What an upload stored, as the API answers it."""

    name: str
    version: str
    sandbox: str
    flow: JSONObject | None


class Loader:
    """Workflow code of every tenant.

    ``sandboxes_of(tenant_id)`` says which sandboxes a tenant's policy allows, and
    ``on_delete(tenant_id, workflow)`` deletes a workflow's instances: both are handed in by
    the composition root, so the loader knows neither tenants nor the engine. ``uploads``
    bounds the checks of uploaded code (see :class:`UploadLimits`).
    """

    def __init__(
        self,
        db: Database,
        validator: Validator,
        clock: Clock,
        *,
        sandboxes_of: Callable[[int], Sequence[str]],
        on_delete: Callable[[int, str], None],
        available: Collection[str] = ("restricted", "wasm"),
        cache_size: int = 1024,
        uploads: UploadLimits | None = None,
    ) -> None:
        self._store = CodeStore(db)
        self._checks = Checks(validator, uploads or UploadLimits())
        self._clock = clock
        self._sandboxes_of = sandboxes_of
        self._on_delete = on_delete
        # The sandboxes this deployment runs (a policy may allow fewer).
        self._available = frozenset(available)
        self._cache: OrderedDict[tuple[int, str, str], Artifact] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._deletions = 0  # workflows deleted so far: a read that spans one is not cached

    async def upload(self, tenant_id: int, tenant: str, name: str, upload: Upload) -> Uploaded:
        """Validate and store code for workflow ``name`` and make it current.

        Returns ``{"name", "version", "sandbox", "flow"}``; raises :class:`CodeInvalid` with the
        problems found, with their lines and columns, and ``UploadBusy`` when the tenant has
        too many uploads being checked already.
        """
        flow = upload.flow.stored() if upload.flow is not None else None
        artifact, wasm = await run_in_threadpool(self._artifact, tenant_id, name, upload)
        entry: str | None = await self._checks.check(tenant_id, tenant, artifact)
        source: str | None = artifact.source
        if wasm is not None:
            entry, source = None, None  # a module has no class, and its bytes are stored
        code = Version(
            name, artifact.version, upload.sandbox, entry, source, self._clock.now(), wasm
        )
        await run_in_threadpool(self._store.save, tenant_id, code, flow)
        return {"name": name, "version": artifact.version, "sandbox": upload.sandbox, "flow": flow}

    def close(self) -> None:
        """Take no more uploads; checks under way finish within their deadline."""
        self._checks.close()

    def _artifact(self, tenant_id: int, name: str, upload: Upload) -> tuple[Artifact, bytes | None]:
        check_workflow_name(name)
        self._check_allowed(tenant_id, upload.sandbox)
        if upload.sandbox not in self._available:
            raise CodeInvalid(
                f"the {upload.sandbox} sandbox is not available on this server", problems=[]
            )
        return _artifact(upload)

    def _check_allowed(self, tenant_id: int, sandbox: str) -> None:
        allowed = self._sandboxes_of(tenant_id)
        if sandbox not in allowed:
            raise InvalidInput(
                f"the {sandbox!r} sandbox is not allowed by this tenant's policy "
                f"(allowed: {', '.join(allowed) or 'none'})",
                code="sandbox.not_allowed",
            )

    def workflows(self, tenant_id: int) -> list[WorkflowView]:
        return self._store.workflows(tenant_id)

    def workflow(self, tenant_id: int, name: str) -> WorkflowView:
        """The workflow with its current version and every version, newest first."""
        found = self._store.workflow(tenant_id, name)
        if found is None:
            raise _workflow_not_found(name)
        return found

    def current(self, tenant_id: int, name: str) -> str:
        """The version new instances of workflow ``name`` run; raises :class:`NotFound`."""
        version = self._store.current(tenant_id, name)
        if version is None:
            raise _workflow_not_found(name)
        return version

    def current_workflow(self, tenant_id: int, name: str) -> tuple[str, JSONObject | None]:
        """The version new instances of workflow ``name`` run and the workflow's ``flow`` (as
        ``engine.Flow.from_json`` reads it; None: none), in one read; raises
        :class:`NotFound`."""
        found = self._store.current_workflow(tenant_id, name)
        if found is None:
            raise _workflow_not_found(name)
        return found

    def delete(self, tenant_id: int, name: str) -> None:
        """Delete a workflow, its instances and its code.

        The workflow row goes first, so that no new instance is created while the existing
        ones are deleted; its code goes last, so that nothing still running finds it missing.
        """
        if not self._store.delete_workflow(tenant_id, name):
            raise _workflow_not_found(name)
        self._on_delete(tenant_id, name)
        self._store.delete_versions(tenant_id, name)
        with self._lock:
            self._deletions += 1
            for key in [k for k in self._cache if k[:2] == (tenant_id, name)]:
                del self._cache[key]

    def artifact(self, tenant_id: int, workflow: str, version: str) -> Artifact:
        """The code of an exact version, for a sandbox to run; raises :class:`NotFound`."""
        key = (tenant_id, workflow, version)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            deletions = self._deletions
        code = self._store.version(tenant_id, workflow, version)
        if code is None:
            raise NotFound(
                f"workflow {workflow!r} has no version {version!r}", code="version.not_found"
            )
        if code.wasm is not None:
            module = base64.b64encode(code.wasm).decode("ascii")
            artifact = Artifact(code.version, WASM_MODULE, module, None)
        else:
            artifact = Artifact(code.version, code.sandbox, code.source or "", code.class_name)
        with self._lock:
            if self._deletions != deletions:
                # A workflow was deleted while this was read: what was read may be its code,
                # which must not outlive it in the cache.
                return artifact
            self._cache[key] = artifact
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return artifact


def _artifact(upload: Upload) -> tuple[Artifact, bytes | None]:
    """What the sandbox runs for ``upload``, and the module's bytes when it is one."""
    if upload.wasm_base64 is not None:
        wasm = _module_bytes(upload.wasm_base64)
        module = base64.b64encode(wasm).decode("ascii")
        version = content_version(WASM_MODULE, None, module)
        return Artifact(version, WASM_MODULE, module, None), wasm
    source = upload.source or ""
    size = len(source.encode())
    if size > MAX_SOURCE_BYTES:
        raise TooLarge(f"source is {size} bytes; the limit is {MAX_SOURCE_BYTES}")
    version = content_version(upload.sandbox, upload.class_name, source)
    return Artifact(version, upload.sandbox, source, upload.class_name), None


def _module_bytes(encoded: str) -> bytes:
    if len(encoded) > MAX_MODULE_BYTES * 4 // 3 + 4:
        raise TooLarge(f"the module is over the limit of {MAX_MODULE_BYTES} bytes")
    try:
        wasm = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _module_invalid("wasm_base64 is not valid base64") from None
    if not wasm.startswith(b"\0asm"):
        raise _module_invalid("wasm_base64 is not a WebAssembly module (no \\0asm header)")
    return wasm


def _module_invalid(message: str) -> CodeInvalid:
    return CodeInvalid(message, problems=[{"line": 1, "column": 1, "message": message}])


def content_version(sandbox: str, class_name: str | None, source: str) -> str:
    """The version of a piece of code: a hash of everything that decides how it runs."""
    content = json.dumps([sandbox, class_name, source], separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()[:32]


def check_workflow_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"workflow name must be 1-{MAX_NAME} characters matching ^[a-zA-Z0-9_][a-zA-Z0-9_-]*$",
            code="workflow.invalid_name",
        )
    return name


def _workflow_not_found(name: str) -> NotFound:
    return NotFound(f"workflow {name!r} not found", code="workflow.not_found")
