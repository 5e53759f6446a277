"""The ``flow`` of ``PUT /v1/workflows/{name}``: per-key flow control, checked and stored.

The loader keeps it as the JSON the engine reads (``engine.Flow.from_json``): durations in
seconds, absent limits left out, None for no flow at all. A flow is part of each upload: an
upload without one leaves the workflow with none.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from treadle.errors import InvalidDuration
from treadle.runtime import MAX_DURATION_SECONDS, JSONObject, parse_duration

# What the document can say of a duration that must be more than 0: a number of seconds, or
# "<n> <unit>"; the rest (a unit that exists, at most 365 days, not 0) is a 400
# ``duration.invalid`` naming the field.
_POSITIVE_DURATION: list[JsonValue] = [
    {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_SECONDS},
    {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[a-zA-Z]+\s*$"},
]
_SET: JsonDict = {"not": {"type": "null"}}
_COUNT: JsonDict = {"type": "integer", "minimum": 1}


def _integral(value: Any) -> Any:
    # JSON has one kind of number: 2.0 is the integer 2 (as JSON Schema has it), 2.5 is none.
    return int(value) if isinstance(value, float) and value.is_integer() else value


_Int = Annotated[int, BeforeValidator(_integral)]


def positive_seconds(value: float | str, what: str) -> float:
    """``value`` (seconds or ``"<n> <unit>"``) in seconds; raises ``InvalidDuration`` naming
    ``what`` unless it is more than 0 and at most 365 days."""
    seconds = parse_duration(value, what=what)
    if seconds <= 0:
        raise InvalidDuration(f"{what}: must be more than 0")
    return seconds


def _count(value: int) -> int:
    if value < 1:
        raise ValueError("must be an integer of at least 1")
    return value


class RateBody(BaseModel):
    """``rate_per_key``: at most ``limit`` instances of a key start per ``period``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    limit: _Int = Field(json_schema_extra=_COUNT)
    period: float | str = Field(json_schema_extra={"anyOf": _POSITIVE_DURATION})

    @field_validator("limit")
    @classmethod
    def _positive_limit(cls, value: int) -> int:
        return _count(value)


class FlowBody(BaseModel):
    """Per-key flow control of a workflow's instances created with a ``key``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        # "singleton and debounce contradict each other": the document says so too.
        json_schema_extra={
            "not": {
                "required": ["singleton", "debounce"],
                "properties": {"singleton": {"const": True}, "debounce": _SET},
            }
        },
    )

    concurrency_per_key: _Int | None = Field(
        default=None, json_schema_extra={"anyOf": [_COUNT, {"type": "null"}]}
    )
    rate_per_key: RateBody | None = None
    debounce: float | str | None = Field(
        default=None, json_schema_extra={"anyOf": [*_POSITIVE_DURATION, {"type": "null"}]}
    )
    singleton: bool = False

    @field_validator("concurrency_per_key")
    @classmethod
    def _positive_concurrency(cls, value: int | None) -> int | None:
        return None if value is None else _count(value)

    @model_validator(mode="after")
    def _not_both(self) -> Self:
        if self.singleton and self.debounce is not None:
            raise ValueError(
                "singleton and debounce contradict each other (a singleton refuses a second "
                "instance of a key, debounce merges it into the queued one): give one"
            )
        return self

    def stored(self) -> JSONObject | None:
        """The flow as stored and shown: durations in seconds, absent limits left out; None
        when it limits nothing."""
        out: dict[str, Any] = {}
        if self.concurrency_per_key is not None:
            out["concurrency_per_key"] = self.concurrency_per_key
        if self.rate_per_key is not None:
            period = positive_seconds(self.rate_per_key.period, "flow.rate_per_key.period")
            out["rate_per_key"] = {"limit": self.rate_per_key.limit, "period": period}
        if self.debounce is not None:
            out["debounce"] = positive_seconds(self.debounce, "flow.debounce")
        if self.singleton:
            out["singleton"] = True
        return out or None


def key_limits(flow: JSONObject | None) -> dict[str, Any]:
    """The limits a workflow's ``flow_keys`` rows copy from its stored ``flow``."""
    flow = flow or {}
    rate = flow.get("rate_per_key")
    rate = rate if isinstance(rate, dict) else {}
    return {
        "concurrency": flow.get("concurrency_per_key"),
        "rate_limit": rate.get("limit"),
        "rate_period": rate.get("period"),
    }
