"""Per-key flow control at the edges, without a server: the bodies the API takes (a workflow's
``flow``, a create's ``key``, ``priority``, ``start_at``, ``delay``), the bodies the SDK sends,
and the command line's flags. tests/integration/test_flow_api.py drives them end to end."""

from __future__ import annotations

import argparse
import datetime as dt
import json

import pytest
from pydantic import ValidationError

from dispatcher.http._errors import invalid_input
from dispatcher.http._instances import BatchBody, NewInstanceBody, instant
from dispatcher.http._schemas import MAX_KEY
from engine import Flow
from engine._flow import MAX_KEY as ENGINE_MAX_KEY
from loader import Upload
from treadle.client import _requests
from treadle.client._cli import _rate_arg
from treadle.client._models import FlowControl, RatePerKey
from treadle.errors import InvalidDuration


def _refusal(model: type[NewInstanceBody] | type[BatchBody], raw: object) -> str:
    with pytest.raises(ValidationError) as refused:
        model.model_validate_json(json.dumps(raw))
    return invalid_input(refused.value).message


def _flow(flow: object) -> Upload:
    return Upload.model_validate_json(
        json.dumps({"sandbox": "restricted", "source": "x", "flow": flow})
    )


def test_the_api_and_the_engine_agree_on_the_longest_key() -> None:
    assert MAX_KEY == ENGINE_MAX_KEY


def test_a_flow_is_stored_in_seconds_as_the_engine_reads_it() -> None:
    upload = _flow(
        {
            "concurrency_per_key": 3.0,
            "rate_per_key": {"limit": 10, "period": "1 minute"},
            "debounce": "2 seconds",
        }
    )
    assert upload.flow is not None
    stored = upload.flow.stored()
    assert stored == {
        "concurrency_per_key": 3,
        "rate_per_key": {"limit": 10, "period": 60.0},
        "debounce": 2.0,
    }
    assert Flow.from_json(stored) == Flow(3, 10, 60.0, 2.0, False)
    empty = _flow({"singleton": False}).flow
    assert empty is not None and empty.stored() is None


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        ({"concurrency_per_key": 0}, "flow.concurrency_per_key: must be an integer of at least 1"),
        ({"concurrency_per_key": 1.5}, "flow.concurrency_per_key"),
        ({"rate_per_key": {"limit": -1, "period": 1}}, "flow.rate_per_key.limit: must be"),
        ({"rate_per_key": {"period": 1}}, "flow.rate_per_key.limit: Field required"),
        ({"singleton": "yes"}, "flow.singleton"),
        ({"singleton": True, "debounce": 1}, "singleton and debounce contradict"),
        ({"concurrency": 1}, "flow.concurrency: unknown field"),
    ],
)
def test_a_bad_flow_is_refused_naming_the_field(flow: object, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _flow(flow)
    assert message in invalid_input(refused.value).message


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        ({"debounce": 0}, "flow.debounce: must be more than 0"),
        ({"debounce": "2 fortnights"}, "flow.debounce: '2 fortnights' is not a duration"),
        ({"rate_per_key": {"limit": 1, "period": "0 seconds"}}, "period: must be more than 0"),
        ({"rate_per_key": {"limit": 1, "period": 366 * 86400}}, "must not exceed 365 days"),
    ],
)
def test_a_bad_duration_of_a_flow_is_a_duration_error(flow: object, message: str) -> None:
    upload = _flow(flow)
    assert upload.flow is not None
    with pytest.raises(InvalidDuration, match=message):
        upload.flow.stored()


def test_a_create_takes_its_key_priority_and_start() -> None:
    body = NewInstanceBody.model_validate_json(
        '{"key": "acme", "priority": 9.0, "start_at": "2030-01-01T10:00:00+01:00"}'
    )
    new = body.new_instance()
    assert (new.key, new.priority, new.start_at, new.delay) == ("acme", 9, 1893488400.0, None)
    assert NewInstanceBody().new_instance().priority == 5
    assert NewInstanceBody(delay="2 minutes").new_instance().delay == 120.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"priority": 10}, "invalid request: priority: must be an integer from 0 to 9"),
        ({"priority": False}, "invalid request: priority: Input should be a valid integer"),
        ({"priority": 4.5}, "invalid request: priority"),
        ({"key": ""}, f"invalid request: key: must be 1 to {MAX_KEY} characters"),
        ({"key": "é" * (MAX_KEY + 1)}, f"key: must be 1 to {MAX_KEY} characters"),
        ({"start_at": "2030-01-01T00:00:00Z", "delay": 0}, "give start_at or delay, not both"),
        ({"ky": "a"}, "invalid request: ky: unknown field"),
    ],
)
def test_a_bad_create_is_refused_naming_the_field(body: dict[str, object], message: str) -> None:
    assert message in _refusal(NewInstanceBody, body)
    batch = _refusal(BatchBody, {"instances": [{}, body]})
    assert "instances.1" in batch and message.removeprefix("invalid request: ") in batch


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2030-01-01T00:00:00Z", 1893456000.0),
        ("2030-01-01t00:00:00z", 1893456000.0),
        ("2030-01-01T00:00:00.250-02:00", 1893463200.25),
        ("2016-12-31T23:59:60Z", 1483228800.0),  # a leap second: the second after
    ],
)
def test_start_at_reads_iso_8601_with_a_time_zone(value: str, seconds: float) -> None:
    assert instant(value, "start_at") == seconds


@pytest.mark.parametrize("value", ["2030-01-01T00:00:00", "2030-01-01", "soon", "0000-01-01Z"])
def test_start_at_without_a_time_zone_or_not_a_time_is_refused(value: str) -> None:
    with pytest.raises(InvalidDuration, match=r"instances\.2\.start_at: .* with a time zone"):
        instant(value, "instances.2.start_at")


def test_a_delay_is_a_duration_naming_its_item() -> None:
    batch = BatchBody.model_validate_json('{"instances": [{}, {"delay": -1}]}')
    with pytest.raises(InvalidDuration, match=r"instances\.1\.delay: must not be negative"):
        batch.instances[1].new_instance(1)


def test_the_sdk_sends_only_what_was_given() -> None:
    plain = _requests.create("w", {"x": 1}, None)
    assert plain.body == {"params": {"x": 1}}
    start: _requests.Start = {
        "key": "acme",
        "priority": 0,
        "start_at": dt.datetime(2030, 1, 1, 9),  # naive: UTC
        "delay": None,
    }
    assert _requests.create("w", None, "i1", start).body == {
        "params": None,
        "id": "i1",
        "key": "acme",
        "priority": 0,
        "start_at": "2030-01-01T09:00:00+00:00",
    }
    later = _requests.create("w", None, None, {"delay": dt.timedelta(minutes=2)})
    assert later.body == {"params": None, "delay": 120.0}
    batch = _requests.create_batch("w", [{"params": 1, "key": "k", "delay": "1 hour"}])
    assert batch.body == {"instances": [{"params": 1, "key": "k", "delay": "1 hour"}]}


def test_the_sdk_sends_a_flow_as_the_api_takes_it() -> None:
    given = {
        "rate_per_key": {"limit": 5, "period": dt.timedelta(minutes=1)},
        "debounce": dt.timedelta(seconds=3),
    }
    sent = _requests.deploy("w", "src", "restricted", None, None, given).body
    assert sent["flow"] == {"rate_per_key": {"limit": 5, "period": 60.0}, "debounce": 3.0}
    model = FlowControl(concurrency_per_key=2, rate_per_key=RatePerKey(limit=1, period=9.0))
    sent = _requests.deploy("w", "src", "restricted", None, None, model).body
    assert sent["flow"] == {"concurrency_per_key": 2, "rate_per_key": {"limit": 1, "period": 9.0}}
    assert "flow" not in _requests.deploy("w", "src", "restricted", None, None).body


def test_the_command_line_reads_a_rate_as_limit_slash_period() -> None:
    assert _rate_arg("10/1m") == {"limit": 10, "period": 60.0}
    assert _rate_arg("3/90") == {"limit": 3, "period": 90.0}
    for bad in ["10", "x/1m", "10/soon"]:
        with pytest.raises(argparse.ArgumentTypeError):
            _rate_arg(bad)
