"""What the audit log keeps of policies (never var values), and entries as terminal lines."""

from __future__ import annotations

from tenants import Policy, describe_entry
from tenants._audit import change_details, created_details


def test_a_new_policy_is_kept_with_the_names_of_its_vars_only() -> None:
    details = created_details(Policy(memory_mb=128, vars={"token": "secret", "a": 1}))
    assert details["vars"] == ["a", "token"]
    assert details["policy"]["memory_mb"] == 128 and "vars" not in details["policy"]
    assert "secret" not in repr(details)


def test_a_policy_change_shows_fields_before_and_after_and_which_vars_changed() -> None:
    before = Policy(vars={"keep": 1, "edit": "old-secret", "drop": "gone-secret"})
    patch = {"memory_mb": 512, "vars": {"keep": 1, "edit": "new-secret", "add": "x-secret"}}
    after = Policy.model_validate({**before.model_dump(), **patch})
    details = change_details(before, after, patch)
    assert details == {
        "fields": ["memory_mb", "vars"],
        "changes": {"memory_mb": {"before": 256, "after": 512}},
        "vars": {"added": ["add"], "removed": ["drop"], "changed": ["edit"]},
    }
    assert "secret" not in repr(details)


def test_an_entry_reads_as_one_line() -> None:
    entry = {
        "id": 7,
        "time": "2026-12-01T09:00:00.000Z",
        "actor": "configured",
        "client": "10.0.0.7",
        "action": "key.revoked",
        "tenant": "acme",
        "target": "3f2a",
        "outcome": "ok",
        "details": {},
    }
    assert describe_entry(entry) == (
        "2026-12-01T09:00:00.000Z key.revoked acme/3f2a configured@10.0.0.7 ok {}"
    )
    anonymous = {**entry, "tenant": None, "target": None, "client": None, "outcome": "denied"}
    assert describe_entry(anonymous).split()[2:5] == ["-", "configured@-", "denied"]
