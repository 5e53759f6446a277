from __future__ import annotations

import pytest

from engine._names import check_event_type, check_instance_id, check_status, encode_payload
from treadle.errors import InvalidInput, TooLarge, ValueNotStorable


def test_ids_and_event_types_follow_the_pattern_and_length() -> None:
    assert check_instance_id("order-1_A") == "order-1_A"
    assert check_event_type("approved") == "approved"
    for bad in ["", "abc\n", "-leading-dash", "has space", "dot.ted", "x" * 101, 7]:
        with pytest.raises(InvalidInput) as err:
            check_instance_id(bad)
        assert err.value.code == "instance.invalid_id"
    with pytest.raises(InvalidInput) as err:
        check_event_type("a.b")
    assert err.value.code == "event.invalid_type"


def test_statuses_are_the_contract_ones() -> None:
    assert check_status("waitingForPause") == "waitingForPause"
    with pytest.raises(InvalidInput):
        check_status("done")


def test_payloads_must_be_json_and_within_the_limit() -> None:
    assert encode_payload({"a": [1, 2]}, "params") == '{"a":[1,2]}'
    with pytest.raises(InvalidInput):
        encode_payload({1, 2}, "params")
    with pytest.raises(TooLarge):
        encode_payload("x" * (1 << 20), "params")


def test_payloads_that_cannot_be_stored_are_refused_saying_where() -> None:
    with pytest.raises(ValueNotStorable) as caught:
        encode_payload({"items": [0, 2**64 + 1]}, "params")
    assert caught.value.code == "value.not_storable"
    assert caught.value.message.startswith("params.items[1]: the integer 18446744073709551617")
    with pytest.raises(ValueNotStorable):
        encode_payload("a\x00b", "event payload")
    assert encode_payload([2**53, -(2**53)], "params") == "[9007199254740992,-9007199254740992]"
