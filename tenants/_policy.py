"""A tenant's isolation policy: what its code may use, and how much of the platform it gets."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic.config import JsonDict

from treadle.runtime import DEFAULT_LIMITS, JSONObject, unstorable

Sandbox = Literal["restricted", "wasm"]
SANDBOXES: tuple[Sandbox, ...] = ("restricted", "wasm")
MAX_VARS_BYTES = 64 * 1024
MAX_STEPS = 1_000_000
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOST = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
_EGRESS_ITEM: JsonDict = {
    "type": "string",
    "maxLength": 253,
    "pattern": rf"^(\*|{_HOST.pattern})$",
}


def _integral(value: Any) -> Any:
    # JSON has one kind of number: 2.0 is the integer 2 (as JSON Schema has it), 2.5 is none.
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_integral)]
"""An integer in a strict model that also takes integral JSON numbers such as ``2.0``."""


class Policy(BaseModel):
    """Every field of a tenant's policy (``docs/api.md``, Admin) with its default. Unknown
    fields are refused, not ignored: a misspelt limit silently doing nothing is worse than an
    error."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    sandboxes: list[Sandbox] = Field(default_factory=lambda: list(SANDBOXES))
    max_running_instances: JsonInt = Field(default=1000, ge=1, le=1_000_000)
    max_queued_instances: JsonInt = Field(default=2_000_000, ge=1, le=1_000_000_000)
    creates_per_second: JsonInt = Field(default=300, ge=1, le=1_000_000)
    step_cpu_ms: JsonInt = Field(default=DEFAULT_LIMITS.step_cpu_ms, ge=1, le=3_600_000)
    memory_mb: JsonInt = Field(default=DEFAULT_LIMITS.memory_mb, ge=64, le=65_536)
    max_step_result_bytes: JsonInt = Field(
        default=DEFAULT_LIMITS.max_step_result_bytes, ge=1, le=64 * 1024 * 1024
    )
    max_steps_per_instance: JsonInt = Field(
        default=DEFAULT_LIMITS.max_steps_per_instance, ge=1, le=MAX_STEPS
    )
    egress_allow: list[str] = Field(default_factory=list, json_schema_extra={"items": _EGRESS_ITEM})
    retention_days: JsonInt = Field(default=7, ge=1, le=36_500)
    max_storage_mb: JsonInt = Field(default=1024, ge=1, le=16 * 1024 * 1024)
    max_log_bytes_per_instance: JsonInt = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    vars: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sandboxes")
    @classmethod
    def _unique_sandboxes(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("egress_allow")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        hosts = []
        for host in value:
            if host != "*" and (len(host) > 253 or not _HOST.fullmatch(host)):
                raise ValueError(f"{host!r} is not a host name (or '*' for every host)")
            hosts.append(host.lower())
        return list(dict.fromkeys(hosts))

    @field_validator("vars")
    @classmethod
    def _small_json(cls, value: JSONObject, info: ValidationInfo) -> JSONObject:
        try:
            size = len(json.dumps(value, allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"vars must be JSON: {exc}") from None
        if size > MAX_VARS_BYTES:
            raise ValueError(f"vars are {size} bytes of JSON; the limit is {MAX_VARS_BYTES}")
        # New vars must be storable; vars stored before that rule still load.
        found = None if (info.context or {}).get("stored") else unstorable(value)
        if found is not None:
            at, problem = found
            raise ValueError(f"{at}: {problem}" if at else problem)
        return value


def merge_policy(current: Policy, patch: JSONObject) -> Policy:
    """``current`` with the fields present in ``patch`` replaced (a top-level merge: a patch
    of ``vars`` replaces all vars). Raises pydantic's ``ValidationError``."""
    return Policy.model_validate({**current.model_dump(), **patch})


def stored_policy(data: Any) -> Policy:
    """A policy as stored; fields added to Policy after it was written take their defaults."""
    return Policy.model_validate(data or {}, strict=False, context={"stored": True})
