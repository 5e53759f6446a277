"""Fuzz every operation of the served OpenAPI document with schemathesis, on both databases.

Each operation gets requests that fit its schema and requests that break it (schemathesis'
positive and negative modes), sent to a real server on a real database. Path parameters are
often those of a seeded tenant, workflow and instance, so the fuzzer gets past the 404s. Every
response must: not be a 5xx; have a documented status, content type, headers and schema; refuse
what the schema forbids and accept what it allows; carry ``{"error": {"code", "message"}}``
when it is an error; and come within ``REQUEST_TIMEOUT`` (no hang). Requests without valid
credentials get 401 on every operation.

Operations come from the document, so routes added to it are fuzzed with no change here. The
run is bounded and reproducible: ``derandomize`` fixes the examples, ``TREADLE_FUZZ_EXAMPLES``
(default 20 per operation and mode) trades depth for time.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import jsonschema
import pytest
import schemathesis
from httpx import Client
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.app import (
    ADMIN,
    APPROVAL,
    SUM,
    bearer,
    deploy,
    new_tenant,
    wait_status,
)

EXAMPLES = int(os.environ.get("TREADLE_FUZZ_EXAMPLES", "20"))
REQUEST_TIMEOUT = 15.0
# What the server may answer to requests that fit the document, and to requests that do not.
# Credentials are injected, not generated: a generated (and, in negative mode, broken) one would
# be replaced by the valid one and the request judged by what it no longer has. Missing and
# wrong credentials have a test of their own below.
CONFIG = """
[generation]
with-security-parameters = false
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "404", "409", "410", "413", "422", "429"]
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "409", "410", "413", "415", "422", "429"]
"""
# Reads first, destructive operations last, so that the seeded objects live long enough.
ORDER = {"get": 0, "put": 1, "post": 2, "patch": 3, "delete": 4}
INSTANCES = "/v1/workflows/sum/instances"


def error_shape(ctx: Any, response: schemathesis.Response, case: Case) -> bool | None:
    """Every error is ``{"error": {"code": "<dotted.code>", "message": "..."}}``."""
    if response.status_code < 400 or _link_page(case, response):
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    if response.status_code == 429:
        assert response.headers.get("retry-after"), response.headers
    return None


def _link_page(case: Case, response: schemathesis.Response) -> bool:
    """An approval link's page: HTML for a browser, also when it says the link has expired."""
    html = response.headers.get("content-type", [""])[0].startswith("text/html")
    return case.operation.method.upper() == "GET" and html


_OUT_OF_TIME = {"duration.invalid", "key.invalid_expiry"}
_SCHEDULE_SPEC = {"schedule.invalid", "schedule.invalid_id"}
_LINK_TTL = {"duration.invalid", "request.invalid"}


def accepted_unless_out_of_time(
    ctx: Any, response: schemathesis.Response, case: Case
) -> bool | None:
    """``positive_data_acceptance``, but a key's lifetime may also be refused as out of time:
    at most 365 days in any unit, and an expiry in the future, depend on the unit and on the
    clock, which a schema cannot state; so may a usage report's span, which depends on both of
    its times. Any other refusal of a schema-valid request fails."""
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and response.status_code == 400 and "/keys" in case.operation.path:
        assert response.json()["error"]["code"] in _OUT_OF_TIME, response.text
        return None
    # The same for a usage report's span: ``from`` after ``to``, or over 366 days.
    if positive and response.status_code == 400 and case.operation.path.endswith("/usage"):
        assert response.json()["error"]["code"] == "usage.span", response.text
        return None
    # The same for a workflow's flow and a create's start: a duration's unit, or a start_at
    # that Python's ISO 8601 reader takes (docs/flow-control.md).
    if positive and response.status_code == 400 and _flow_control(case):
        assert response.json()["error"]["code"] == "duration.invalid", response.text
        return None
    # The same for a schedule's spec: a cron that croniter refuses, an unknown time zone, a
    # period not positive (docs/schedules.md), which the schema cannot state either.
    if positive and response.status_code == 400 and "/schedules/" in case.operation.path:
        assert response.json()["error"]["code"] in _SCHEDULE_SPEC, response.text
        return None
    # The same for a link's ttl: a duration's unit, or more than 30 days in another unit.
    if positive and response.status_code == 400 and case.operation.path.endswith("/links"):
        assert response.json()["error"]["code"] in _LINK_TTL, response.text
        return None
    if case.operation.path == "/" and response.status_code == 307:
        return None  # the root leads a browser to the playground
    return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]


def _flow_control(case: Case) -> bool:
    path, method = case.operation.path, case.operation.method.upper()
    creates = {"/v1/workflows/{name}/instances", "/v1/workflows/{name}/instances/batch"}
    return (path == "/v1/workflows/{name}" and method == "PUT") or (
        path in creates and method == "POST"
    )


_DOCUMENT: dict[str, Any] = {}  # the served OpenAPI document, read by Seeded.schema()


def _still_valid_body(case: Case) -> bool:
    """Whether a negative case broke only its body, into one the document still admits.

    The fuzzer breaks one branch of an ``anyOf`` at a time: an array of ``JsonValue`` turned
    into an object still is a ``JsonValue`` (another branch), and its acceptance is right.
    """
    components = case.meta.components if case.meta is not None else {}
    broken = [where for where, info in components.items() if not info.mode.is_positive]
    if [where.value for where in broken] != ["body"]:
        return False
    document = _DOCUMENT
    operation = document["paths"][case.operation.path][case.operation.method.lower()]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    whole = {**schema, "components": document["components"]}
    try:  # as the server reads it: JSON text, where two escaped surrogates make one character
        body = json.loads(json.dumps(case.body))
    except (TypeError, ValueError):
        return False  # not JSON at all (bytes of another media type, NaN): broken indeed
    # A float such as 4e16 in a JsonValue is an integer beyond 2^53 to JSON Schema, but a float
    # to the server, which stores it as it came: still valid in either reading.
    return any(validator(whole).is_valid(body) for validator in _VALIDATORS)


_VALIDATORS = [
    jsonschema.Draft202012Validator,
    jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
        ),
    ),
]


def rejected_unless_still_valid(
    ctx: Any, response: schemathesis.Response, case: Case
) -> bool | None:
    """``negative_data_rejection``, but not for a "broken" body that the document admits."""
    if _still_valid_body(case):
        return None
    return negative_data_rejection(ctx, response, case)  # type: ignore[no-any-return]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    accepted_unless_out_of_time,
    rejected_unless_still_valid,
    error_shape,
]


@dataclass
class Seeded:
    """A server with a tenant, workflows and instances to aim at."""

    base_url: str
    tenant: dict[str, str]
    known: dict[str, list[str]]
    cursor: str
    failures: list[str] = field(default_factory=list)

    def schema(self) -> Any:
        config = schemathesis.Config.from_str(CONFIG)
        _DOCUMENT.clear()
        _DOCUMENT.update(httpx.get(f"{self.base_url}/openapi.json").json())
        return schemathesis.openapi.from_url(f"{self.base_url}/openapi.json", config=config)

    def credentials(self, path: str) -> dict[str, str]:
        return ADMIN if admin_only(path) else self.tenant


def admin_only(path: str) -> bool:
    """The admin API, and the metrics (their counts are the whole platform's)."""
    return path.startswith("/v1/admin/") or path == "/metrics"


def secured(path: str) -> bool:
    """Every route but the two a caller without an API key reaches: a webhook's delivery (its
    signature is its credential) and an approval link (its token is)."""
    public = path.startswith(("/v1/hooks/", "/v1/links/"))
    return not public and (path.startswith("/v1/") or admin_only(path))


@pytest.fixture
def seeded(client: Client) -> Seeded:
    acme = new_tenant(client, "acme")
    deploy(client, acme, "sum", SUM)
    deploy(client, acme, "approval", APPROVAL)
    for instance in ["i0", "i1"]:
        created = client.post(INSTANCES, json={"id": instance, "params": {"x": 1}}, headers=acme)
        assert created.is_success, created.text
    wait_status(client, acme, f"{INSTANCES}/i1", "complete")
    cursor = client.get(INSTANCES, params={"limit": 1}, headers=acme).json()["next_cursor"]
    approval = "/v1/workflows/approval/instances"
    assert client.post(approval, json={"id": "w1"}, headers=acme).is_success
    wait_status(client, acme, f"{approval}/w1", "waiting")
    nightly = {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}
    assert client.put("/v1/workflows/sum/schedules/nightly", json=nightly, headers=acme).is_success
    bulk = {"filter": {"workflow": "sum", "status": "complete"}, "action": "pause"}
    job = client.post("/v1/instances/bulk", json=bulk, headers=acme).json()["job"]
    hook = client.put("/v1/workflows/sum/hooks/shop", headers=acme).json()["url"]
    link = client.post(f"{approval}/w1/events/approved/links", json={"uses": 100}, headers=acme)
    # The admin operations work on a tenant of their own, so acme's key and policy survive.
    new_tenant(client, "fuzzed")
    spare = client.post("/v1/admin/tenants/fuzzed/keys", headers=ADMIN).json()["id"]
    known = {
        "tenant": ["fuzzed"],
        "key_id": [spare],
        "name": ["sum", "approval"],
        "id": ["i1", "w1"],
        "type": ["approved"],
        "schedule": ["nightly"],
        "job": [job],
        "hook": ["shop"],
        "hook_id": [hook.rsplit("/", 1)[1]],
        "token": [link.json()["url"].rsplit("/", 1)[1]],
    }
    return Seeded(str(client.base_url).rstrip("/"), acme, known, cursor)


def operations(schema: Any) -> list[Any]:
    found = [result.ok() for result in schema.get_all_operations()]
    return sorted(found, key=lambda op: ORDER.get(op.method.lower(), 0))


def _path_combinations(seeded: Seeded, path: str) -> Iterator[dict[str, str]]:
    names = re.findall(r"{(\w+)}", path)
    if not names:
        return
    if "id" in names:  # an instance belongs to one workflow: i1 to sum, w1 to approval
        pairs = [("sum", "i1")] if path.endswith("/stream") else [("sum", "i1"), ("approval", "w1")]
        for workflow, instance in pairs:
            values = {"name": workflow, "id": instance, "type": "approved"}
            yield {n: values[n] for n in names}
        return
    for values in itertools.product(*(seeded.known[n] for n in names)):
        yield dict(zip(names, values, strict=True))


def _takes_cursor(operation: Any) -> bool:
    return any(p.get("name") == "cursor" for p in operation.definition.raw.get("parameters", []))


def cases(seeded: Seeded, operation: Any, mode: GenerationMode) -> st.SearchStrategy[Case]:
    """Generated path parameters, or those of the seeded objects, half the time each.

    A cursor is opaque: a request that fits the document carries one the server gave out.
    """
    query = {"cursor": seeded.cursor} if mode.is_positive and _takes_cursor(operation) else None
    aimed = [
        operation.as_strategy(generation_mode=mode, path_parameters=values, query=query)
        for values in _path_combinations(seeded, operation.path)
    ]
    generated = operation.as_strategy(generation_mode=mode, query=query)
    if not aimed:
        return generated
    # A live stream only ends once its instance has finished: aim it at the finished one only.
    if operation.path.endswith("/stream"):
        return st.one_of(*aimed)
    return st.one_of(generated, st.one_of(*aimed))


def bounded(examples: int) -> hypothesis.settings:
    """Reproducible (derandomized, no example database) and bounded: no shrinking, whose
    time has no bound; a failure is reported as first found."""
    return hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )


def fuzz(seeded: Seeded, operation: Any, mode: GenerationMode) -> None:
    headers = seeded.credentials(operation.path)

    @hypothesis.given(case=cases(seeded, operation, mode))
    @bounded(EXAMPLES)
    def one(case: Case) -> None:
        case.call_and_validate(
            base_url=seeded.base_url,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            checks=CHECKS,
            # (else run as well, from the configuration: they are wrapped in CHECKS)
            excluded_checks=[positive_data_acceptance, negative_data_rejection],
        )

    try:
        one()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, operation.label  # nothing in it to break
    except (Exception, BaseExceptionGroup) as exc:  # report every operation's failures
        seeded.failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_operation_withstands_the_fuzzer(seeded: Seeded) -> None:
    schema = seeded.schema()
    ops = operations(schema)
    assert len(ops) >= 20, [op.label for op in ops]
    for operation in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(seeded, operation, mode)
    assert not seeded.failures, "\n\n".join(seeded.failures)


BAD_CREDENTIALS: list[Callable[[Seeded, str], dict[str, str]]] = [
    lambda seeded, path: {},
    lambda seeded, path: {"Authorization": "Bearer"},
    lambda seeded, path: {"Authorization": "Basic dXNlcjpwYXNz"},
    lambda seeded, path: {"Authorization": "Bearer tdl_0123456789abcdef_wrong"},
    lambda seeded, path: {"Authorization": "Bearer not-a-credential"},
    # the other kind of credential: a tenant key on the admin API, the admin token elsewhere
    lambda seeded, path: seeded.tenant if admin_only(path) else ADMIN,
]


def refuse_bad_credentials(seeded: Seeded, operation: Any) -> None:
    @hypothesis.given(case=cases(seeded, operation, GenerationMode.POSITIVE))
    @bounded(3)
    def refused(case: Case) -> None:
        for credentials in BAD_CREDENTIALS:
            reply = case.call(
                base_url=seeded.base_url,
                headers=credentials(seeded, operation.path),
                timeout=REQUEST_TIMEOUT,
            )
            assert reply.status_code == 401, (operation.label, reply.request.headers, reply.text)
            assert reply.json()["error"]["code"] == "auth.unauthorized"
            assert reply.headers["www-authenticate"] == ["Bearer"]

    refused()


@pytest.mark.slow
def test_every_operation_refuses_missing_or_wrong_credentials(seeded: Seeded) -> None:
    guarded = [op for op in operations(seeded.schema()) if secured(op.path)]
    assert len(guarded) >= 18
    assert "/metrics" in {op.path for op in guarded}
    for operation in guarded:
        refuse_bad_credentials(seeded, operation)


def test_a_deleted_key_is_refused_everywhere_at_once(client: Client, seeded: Seeded) -> None:
    key = client.post("/v1/admin/tenants/acme/keys", headers=ADMIN).json()
    headers = bearer(key["key"])
    assert client.get("/v1/workflows", headers=headers).status_code == 200
    deleted = client.delete(f"/v1/admin/tenants/acme/keys/{key['id']}", headers=ADMIN)
    assert deleted.status_code == 204
    for path in ["/v1/workflows", "/v1/workflows/sum", f"{INSTANCES}/i1"]:
        assert client.get(path, headers=headers).status_code == 401, path
