"""Tenant policies: the documented defaults (docs/api.md), strict validation, partial merges."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tenants import Policy, merge_policy
from tenants._policy import stored_policy

DOCUMENTED_DEFAULTS = {
    "sandboxes": ["restricted", "wasm"],
    "max_running_instances": 1000,
    "max_queued_instances": 2000000,
    "creates_per_second": 300,
    "step_cpu_ms": 30000,
    "memory_mb": 256,
    "max_step_result_bytes": 1048576,
    "max_steps_per_instance": 10000,
    "egress_allow": [],
    "retention_days": 7,
    "max_storage_mb": 1024,
    "max_log_bytes_per_instance": 1048576,
    "vars": {},
}


def test_the_defaults_are_those_of_the_design() -> None:
    assert Policy().model_dump() == DOCUMENTED_DEFAULTS


@pytest.mark.parametrize(
    "fields",
    [
        {"unknown": 1},
        {"memory_mb": "256"},
        {"memory_mb": 256.5},
        {"memory_mb": float("inf")},
        {"memory_mb": True},
        {"memory_mb": 32},
        {"step_cpu_ms": 0},
        {"retention_days": -1},
        {"sandboxes": ["docker"]},
        {"sandboxes": "restricted"},
        {"egress_allow": ["bad host"]},
        {"egress_allow": ["http://example.com"]},
        {"vars": {"big": "x" * 70_000}},
        {"vars": []},
    ],
)
def test_invalid_fields_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Policy.model_validate(fields)


def test_an_integral_json_number_is_an_integer() -> None:
    # JSON Schema, and so the OpenAPI document, counts 256.0 as the integer 256.
    policy = Policy.model_validate_json('{"memory_mb": 256.0, "retention_days": 3e1}')
    assert (policy.memory_mb, policy.retention_days) == (256, 30)
    assert type(policy.memory_mb) is int


def test_host_names_are_lowercased_and_blanks_refused() -> None:
    assert Policy(egress_allow=["API.Example.com"]).egress_allow == ["api.example.com"]
    with pytest.raises(ValidationError, match="not a host name"):
        Policy(egress_allow=[" api.example.com"])


def test_egress_hosts_are_normalised_and_deduplicated() -> None:
    policy = Policy.model_validate({"egress_allow": ["API.example.com", "api.example.com", "*"]})
    assert policy.egress_allow == ["api.example.com", "*"]
    assert Policy.model_validate({"egress_allow": ["*.example.com"]}).egress_allow == [
        "*.example.com"
    ]


def test_a_patch_replaces_only_the_fields_it_names() -> None:
    current = Policy.model_validate({"memory_mb": 128, "vars": {"a": 1}})
    merged = merge_policy(current, {"vars": {"b": 2}, "sandboxes": ["restricted"]})
    assert merged.model_dump() == {
        **DOCUMENTED_DEFAULTS,
        "memory_mb": 128,
        "vars": {"b": 2},
        "sandboxes": ["restricted"],
    }


def test_a_bad_patch_is_refused_whole() -> None:
    with pytest.raises(ValidationError, match="memory_mb"):
        merge_policy(Policy(), {"memory_mb": 1, "vars": {"a": 1}})


def test_vars_must_be_storable_but_stored_ones_still_load() -> None:
    with pytest.raises(ValidationError, match=r"limit: the integer 18446744073709551617 is beyond"):
        merge_policy(Policy(), {"vars": {"limit": 2**64 + 1}})
    with pytest.raises(ValidationError, match=r"a string holds U\+0000"):
        Policy(vars={"token": "a\x00b"})
    # Stored before the rule: the tenant keeps working.
    assert stored_policy({"vars": {"limit": 2**64 + 1}}).vars == {"limit": 2**64 + 1}
