"""The HTTP API in one table: one row per operation.

The server builds its routes and its OpenAPI document from these rows (``dispatcher.http``),
and the clients their requests (:mod:`treadle.client._requests`). Adding an operation is a
row here, a handler on the server, and a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel

from treadle.client._models import (
    Accepted,
    ApiKey,
    ApprovalLink,
    AuditPage,
    BatchResult,
    Building,
    BulkJob,
    BulkJobList,
    BulkStarted,
    Created,
    Hook,
    HookList,
    HookSecret,
    Instance,
    InstanceList,
    KeyList,
    LogPage,
    Overview,
    Policy,
    RotatedKey,
    Schedule,
    ScheduleList,
    StepPage,
    StoredCode,
    Tenant,
    TenantList,
    UsageReport,
    Workflow,
    WorkflowList,
)

Auth = Literal["tenant", "admin", "none"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Query = Literal["list", "page", "audit", "audit_all", "stream", "usage"]
MAX_BATCH = 100
"""The most instances one batch creates."""


@dataclass(frozen=True)
class Operation:
    """One operation of the API.

    ``name`` is its ``operationId`` and the key of its handler on the server; ``answer`` the
    model of a success's JSON (None: no JSON); ``body`` the name of the request body's schema
    (the model that parses it lives beside its handler); ``errors`` the error statuses it
    answers besides those of every route; ``query`` which query parameters it takes;
    ``building`` the model of a ``202`` it answers while the server builds something the
    request needs (nothing done: send it again after ``Retry-After``).
    """

    name: str
    method: Method
    path: str
    summary: str
    status: int
    answer: type[BaseModel] | None
    auth: Auth = "tenant"
    body: str | None = None
    optional_body: bool = False
    errors: tuple[int, ...] = ()
    query: Query | None = None
    media: str = "application/json"
    building: type[BaseModel] | None = None
    also: int | None = None  # another success status with the same answer (200 for 201)

    def url(self, **params: str) -> str:
        """The path with its ``{parameters}`` filled in, each as one path segment."""
        return self.path.format(**{name: segment(value) for name, value in params.items()})


def segment(value: str) -> str:
    """``value`` as one path segment: a ``/`` in an id must not change the route."""
    return quote(value, safe="")


_TENANT = "/v1/admin/tenants/{tenant}"
_WORKFLOW = "/v1/workflows/{name}"
_INSTANCES = _WORKFLOW + "/instances"
_INSTANCE = _INSTANCES + "/{id}"

# -- the admin API --------------------------------------------------------------------------------

CREATE_TENANT = Operation(
    "create_tenant",
    "POST",
    "/v1/admin/tenants",
    "Create a tenant",
    201,
    Tenant,
    auth="admin",
    body="NewTenant",
    errors=(409,),
)
LIST_TENANTS = Operation(
    "list_tenants", "GET", "/v1/admin/tenants", "List tenants", 200, TenantList, auth="admin"
)
GET_TENANT = Operation(
    "get_tenant", "GET", _TENANT, "Get a tenant", 200, Tenant, auth="admin", errors=(404,)
)
UPDATE_POLICY = Operation(
    "update_policy",
    "PATCH",
    _TENANT + "/policy",
    "Change some fields of a tenant's policy; returns the whole policy",
    200,
    Policy,
    auth="admin",
    body="Policy",
    errors=(404,),
)
CREATE_KEY = Operation(
    "create_key",
    "POST",
    _TENANT + "/keys",
    "Create an API key (the key is shown only this once), maybe with a lifetime",
    201,
    ApiKey,
    auth="admin",
    body="KeyLifetime",
    optional_body=True,
    errors=(404,),
)
LIST_KEYS = Operation(
    "list_keys",
    "GET",
    _TENANT + "/keys",
    "List the tenant's API keys (never their secrets), with when each was last used",
    200,
    KeyList,
    auth="admin",
    errors=(404,),
)
DELETE_KEY = Operation(
    "delete_key",
    "DELETE",
    _TENANT + "/keys/{key_id}",
    "Delete an API key; it stops working at once",
    204,
    None,
    auth="admin",
    errors=(404,),
)
ROTATE_KEY = Operation(
    "rotate_key",
    "POST",
    _TENANT + "/keys/{key_id}/rotate",
    "Replace an API key: a new key now, the old one until the overlap ends",
    201,
    RotatedKey,
    auth="admin",
    body="Rotation",
    optional_body=True,
    errors=(404, 409),
)
TENANT_AUDIT = Operation(
    "tenant_audit",
    "GET",
    _TENANT + "/audit",
    "The audit log of one tenant, newest first",
    200,
    AuditPage,
    auth="admin",
    errors=(400, 404),
    query="audit",
)
AUDIT = Operation(
    "audit",
    "GET",
    "/v1/admin/audit",
    "The audit log of admin actions, newest first",
    200,
    AuditPage,
    auth="admin",
    errors=(400,),
    query="audit_all",
)
OVERVIEW = Operation(
    "overview",
    "GET",
    "/v1/admin/overview",
    "Every tenant's instances by status, and the stalled runs",
    200,
    Overview,
    auth="admin",
)
TENANT_USAGE = Operation(
    "tenant_usage",
    "GET",
    _TENANT + "/usage",
    "What one tenant used, hour by hour (default: the last 24 hours)",
    200,
    UsageReport,
    auth="admin",
    errors=(400, 404),
    query="usage",
)
USAGE = Operation(
    "usage",
    "GET",
    "/v1/usage",
    "What the calling tenant used, hour by hour (default: the last 24 hours)",
    200,
    UsageReport,
    errors=(400,),
    query="usage",
)

# -- workflows ------------------------------------------------------------------------------------

LIST_WORKFLOWS = Operation(
    "list_workflows", "GET", "/v1/workflows", "List workflows", 200, WorkflowList
)
DEPLOY = Operation(
    "deploy",
    "PUT",
    _WORKFLOW,
    "Upload workflow code and make it the current version",
    201,
    StoredCode,
    body="Upload",
    errors=(422, 429),
    building=Building,
)
GET_WORKFLOW = Operation(
    "get_workflow",
    "GET",
    _WORKFLOW,
    "Get a workflow and its versions",
    200,
    Workflow,
    errors=(404,),
)
DELETE_WORKFLOW = Operation(
    "delete_workflow",
    "DELETE",
    _WORKFLOW,
    "Delete a workflow, its code and its instances",
    204,
    None,
    errors=(404,),
)

# -- instances ------------------------------------------------------------------------------------

CREATE_INSTANCE = Operation(
    "create_instance",
    "POST",
    _INSTANCES,
    "Create an instance of the workflow's current version",
    201,
    Created,
    body="NewInstanceBody",
    optional_body=True,
    errors=(404, 409, 429),
)
LIST_INSTANCES = Operation(
    "list_instances",
    "GET",
    _INSTANCES,
    "List instances, newest first",
    200,
    InstanceList,
    errors=(400, 404),
    query="list",
)
LIST_ALL_INSTANCES = Operation(
    "list_all_instances",
    "GET",
    "/v1/instances",
    "List the instances of every workflow, newest first",
    200,
    InstanceList,
    errors=(400,),
    query="list",
)
CREATE_BATCH = Operation(
    "create_batch",
    "POST",
    _INSTANCES + "/batch",
    f"Create up to {MAX_BATCH} instances; errors are reported per item",
    200,
    BatchResult,
    body="BatchBody",
    errors=(404, 429),
)
GET_INSTANCE = Operation(
    "get_instance", "GET", _INSTANCE, "Get an instance", 200, Instance, errors=(404,)
)
SEND_EVENT = Operation(
    "send_event",
    "POST",
    _INSTANCE + "/events/{type}",
    "Send an event to an instance",
    202,
    Accepted,
    body="JsonValue",
    optional_body=True,
    errors=(404, 409, 429),
)
CREATE_LINK = Operation(
    "create_link",
    "POST",
    _INSTANCE + "/events/{type}/links",
    "Mint an approval link that sends this event without an API key",
    201,
    ApprovalLink,
    body="LinkBody",
    optional_body=True,
    errors=(404, 409),
)
LINK_PAGE = Operation(
    "link_page",
    "GET",
    "/v1/links/{token}",
    "The page of an approval link, for a browser (410 once it has expired)",
    200,
    None,
    auth="none",
    errors=(400, 410, 503),
    media="text/html",
)
USE_LINK = Operation(
    "use_link",
    "POST",
    "/v1/links/{token}",
    "Send the approval link's event with this payload (no API key)",
    202,
    Accepted,
    auth="none",
    body="JsonValue",
    optional_body=True,
    errors=(410, 503),
)
GET_LOGS = Operation(
    "get_logs",
    "GET",
    _INSTANCE + "/logs",
    "Get a page of an instance's log, oldest first",
    200,
    LogPage,
    errors=(404,),
    query="page",
)
GET_STEPS = Operation(
    "get_steps",
    "GET",
    _INSTANCE + "/steps",
    "Get a page of an instance's steps, in order",
    200,
    StepPage,
    errors=(404,),
    query="page",
)
CHANGE_STATUS = Operation(
    "change_status",
    "PATCH",
    _INSTANCE + "/status",
    "Pause, resume, terminate or restart an instance",
    200,
    Instance,
    body="StatusBody",
    errors=(404, 409),
)
DELETE_INSTANCE = Operation(
    "delete_instance", "DELETE", _INSTANCE, "Delete an instance", 204, None, errors=(404,)
)
STREAM = Operation(
    "stream",
    "GET",
    _INSTANCE + "/stream",
    "Stream the instance's history, then live events (Server-Sent Events)",
    200,
    None,
    errors=(400, 404, 429),
    query="stream",
    media="text/event-stream",
)

# -- bulk actions ---------------------------------------------------------------------------------

_BULK = "/v1/instances/bulk"
START_BULK = Operation(
    "start_bulk",
    "POST",
    _BULK,
    "Pause, resume, terminate, restart or delete every instance a filter matches, in the "
    "background; follow the job it answers",
    202,
    BulkStarted,
    body="BulkBody",
    errors=(404,),
)
LIST_BULK = Operation(
    "list_bulk", "GET", _BULK, "The tenant's bulk jobs, newest first", 200, BulkJobList
)
GET_BULK = Operation(
    "get_bulk", "GET", _BULK + "/{job}", "A bulk job and its progress", 200, BulkJob, errors=(404,)
)
CANCEL_BULK = Operation(
    "cancel_bulk",
    "DELETE",
    _BULK + "/{job}",
    "Cancel a running bulk job (what it did stays done)",
    200,
    BulkJob,
    errors=(404, 409),
)

# -- schedules ------------------------------------------------------------------------------------

_SCHEDULES = _WORKFLOW + "/schedules"
PUT_SCHEDULE = Operation(
    "put_schedule",
    "PUT",
    _SCHEDULES + "/{schedule}",
    "Create (201) or replace (200) a schedule of the workflow",
    201,
    Schedule,
    body="ScheduleBody",
    errors=(404,),
    also=200,
)
LIST_SCHEDULES = Operation(
    "list_schedules",
    "GET",
    _SCHEDULES,
    "List the workflow's schedules",
    200,
    ScheduleList,
    errors=(404,),
)
GET_SCHEDULE = Operation(
    "get_schedule",
    "GET",
    _SCHEDULES + "/{schedule}",
    "Get a schedule",
    200,
    Schedule,
    errors=(404,),
)
DELETE_SCHEDULE = Operation(
    "delete_schedule",
    "DELETE",
    _SCHEDULES + "/{schedule}",
    "Delete a schedule (the instances it made stay)",
    204,
    None,
    errors=(404,),
)

# -- webhooks -------------------------------------------------------------------------------------

_HOOKS = _WORKFLOW + "/hooks"
PUT_HOOK = Operation(
    "put_hook",
    "PUT",
    _HOOKS + "/{hook}",
    "Create a webhook (201), or give an existing one a new secret (200); the secret is shown once",
    201,
    HookSecret,
    errors=(404,),
    also=200,
)
LIST_HOOKS = Operation(
    "list_hooks", "GET", _HOOKS, "List the workflow's webhooks", 200, HookList, errors=(404,)
)
GET_HOOK = Operation(
    "get_hook", "GET", _HOOKS + "/{hook}", "Get a webhook", 200, Hook, errors=(404,)
)
DELETE_HOOK = Operation(
    "delete_hook",
    "DELETE",
    _HOOKS + "/{hook}",
    "Delete a webhook (the instances it made stay)",
    204,
    None,
    errors=(404,),
)
SEND_HOOK = Operation(
    "send_hook",
    "POST",
    "/v1/hooks/{hook_id}",
    "Create an instance whose params are the body, signed with the hook's secret (no API key)",
    201,
    Created,
    auth="none",
    body="JsonValue",
    optional_body=True,
    errors=(400, 401, 409, 413, 429, 503),
    also=200,
)

OPERATIONS: tuple[Operation, ...] = (
    CREATE_TENANT,
    LIST_TENANTS,
    GET_TENANT,
    UPDATE_POLICY,
    CREATE_KEY,
    LIST_KEYS,
    DELETE_KEY,
    ROTATE_KEY,
    TENANT_AUDIT,
    AUDIT,
    TENANT_USAGE,
    OVERVIEW,
    USAGE,
    START_BULK,
    LIST_BULK,
    GET_BULK,
    CANCEL_BULK,
    LIST_WORKFLOWS,
    DEPLOY,
    GET_WORKFLOW,
    DELETE_WORKFLOW,
    CREATE_INSTANCE,
    LIST_INSTANCES,
    LIST_ALL_INSTANCES,
    CREATE_BATCH,
    GET_INSTANCE,
    SEND_EVENT,
    CREATE_LINK,
    GET_LOGS,
    GET_STEPS,
    CHANGE_STATUS,
    DELETE_INSTANCE,
    STREAM,
    PUT_SCHEDULE,
    LIST_SCHEDULES,
    GET_SCHEDULE,
    DELETE_SCHEDULE,
    PUT_HOOK,
    LIST_HOOKS,
    GET_HOOK,
    DELETE_HOOK,
    SEND_HOOK,
    LINK_PAGE,
    USE_LINK,
)
"""Every operation of the API, in the order the server matches them."""
