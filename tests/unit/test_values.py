"""The rule for stored values: what is refused, where the message says it is, what is cleaned."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable

from storage import tables
from storage._json import dumps, loads, loads_postgresql
from treadle.errors import InvalidInput, ValueNotStorable
from treadle.runtime._values import MAX_DEPTH, check_storable, clean_text, describe, unstorable

BIG = 2**64 + 1


@pytest.mark.parametrize(
    "value",
    [
        None, True, 0, 2**53, -(2**53), 1.5, 1e300, -0.0, "", "text é ✓ 😀", [], {},
        {"a": [1, {"b": None}], "ü": "\u2028"}, (1, 2), [[[]]] * 3,
    ],
)  # fmt: skip
def test_json_within_the_rule_can_be_stored(value: object) -> None:
    assert unstorable(value) is None
    check_storable(value, "params")


@pytest.mark.parametrize(
    ("value", "where", "problem"),
    [
        (2**53 + 1, "", f"the integer {2**53 + 1} is beyond ±2^53 (9007199254740992)"),
        (-(2**53) - 1, "", "the integer -9007199254740993 is beyond ±2^53"),
        ({"items": [0, 1, 2, BIG]}, "items[3]", f"the integer {BIG} is beyond"),
        ([int("7" * 400)], "[0]", "the integer 777777777777… (400 digits) is beyond"),
        ({"a b": {"c": float("nan")}}, '["a b"].c', "NaN is not a JSON number"),
        ([float("-inf")], "[0]", "Infinity is not a JSON number"),
        ("a\x00b", "", "a string holds U+0000 (NUL), which cannot be stored"),
        (["x", {"k": "\udc80"}], "[1].k", "a string holds a lone surrogate (U+DC80), which is"),
        ({"ok": {"bad\x00": 1}}, "ok", 'the key "bad\\u0000" holds U+0000 (NUL)'),
        ({"\ud800": 1}, "", 'the key "\\ud800" holds a lone surrogate (U+D800)'),
        ({1: "x"}, "", "the key 1 is not a string"),
        ({"s": {1, 2}}, "s", "a set is not a JSON value"),
        ({"b": b"raw"}, "b", "a bytes is not a JSON value"),
    ],
)
def test_what_cannot_be_stored_is_named_with_where_it_is(
    value: object, where: str, problem: str
) -> None:
    found = unstorable(value)
    assert found is not None
    assert found[0] == where
    assert found[1].startswith(problem), found


def test_the_first_problem_in_document_order_is_the_one_reported() -> None:
    assert unstorable([1, BIG, "\x00"]) == unstorable([1, BIG])
    assert unstorable({"a": "\x00", "b": BIG}) == unstorable({"a": "\x00"})


def test_nesting_is_limited_without_recursion() -> None:
    deep: list[object] = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert unstorable(deep) is None
    deeper: list[object] = [deep]
    for _ in range(100_000):  # far deeper than Python could recurse
        deeper = [deeper]
    found = unstorable(deeper)
    assert found is not None and found[1] == f"it is nested more than {MAX_DEPTH} levels deep"


def test_an_integer_of_any_size_gets_a_message() -> None:
    found = unstorable(10**5000)  # more digits than Python turns into text
    assert found is not None
    assert found[1].startswith("the integer of more than 4300 digits is beyond ±2^53")


def test_the_error_names_what_the_value_is_then_where_and_why() -> None:
    with pytest.raises(ValueNotStorable) as caught:
        check_storable({"items": [0, 1, 2, BIG]}, "params")
    assert caught.value.code == "value.not_storable"
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.message.startswith(f"params.items[3]: the integer {BIG} is beyond")
    assert describe("event payload", ("[2]", "why")) == "event payload[2]: why"
    assert describe("event payload", ("", "why")) == "event payload: why"


def test_text_that_is_only_reported_is_cleaned_not_refused() -> None:
    assert clean_text("plain ✓ 😀") == "plain ✓ 😀"
    assert clean_text("a\x00b\ud800c\udfff") == "a\ufffdb\ufffdc\ufffd"


def test_the_stored_encoding_is_compact_and_refuses_what_slipped_through() -> None:
    assert dumps({"a": [1, 2.5, "é"]}) == '{"a":[1,2.5,"\\u00e9"]}'
    assert dumps(2**53) == "9007199254740992"
    assert dumps("\\u0000 and 1234567890123456789 as text") is not None  # only looks suspect
    for bad in [BIG, "a\x00", {"\ud800": 1}]:
        with pytest.raises(ValueNotStorable):
            dumps(bad)


def test_postgresql_numbers_that_were_floats_come_back_as_floats() -> None:
    # JSONB prints the float 1e16 as 10000000000000000; no stored integer is that large.
    assert loads_postgresql("[10000000000000000, 9007199254740992, 1.0, 0.0000001]") == [
        1e16,
        2**53,
        1.0,
        1e-7,
    ]
    value = loads_postgresql("[-250000000000000000000]")[0]
    assert isinstance(value, float) and value == -2.5e20
    assert loads(b'{"a": 1}') == {"a": 1}
    # Integers stored before the rule stay exact when they cannot be a float's digits.
    assert loads_postgresql(str(BIG)) == BIG
    assert loads_postgresql("1" + "0" * 400) == 10**400


def test_json_columns_are_declared_with_text_affinity_on_sqlite() -> None:
    ddl = str(CreateTable(tables.steps).compile(dialect=sqlite.dialect()))
    assert "output JSONTEXT" in ddl and "attempts JSONTEXT" in ddl
    assert "output JSONB" in str(CreateTable(tables.steps).compile(dialect=postgresql.dialect()))
