"""Usage (docs/api.md): what a tenant used, hour by hour, for the operator's bills and the
tenant's own view (the admin asks for any tenant's; a tenant's key gets its own only); and the
operator's overview of every tenant's instances and the stalled runs."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.http._instances import caller_of
from dispatcher.http._routing import Handlers
from engine import Engine, Usage, UsageReport
from storage import Clock, iso
from tenants import TenantStore
from treadle.errors import InvalidInput
from treadle.runtime import JSONObject, parse_instant

SPAN_REFUSED = "usage.span"
_FIRST = dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()
_LAST = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
DEFAULT_SPAN = 24 * 3600.0
MAX_SPAN = 366 * 24 * 3600.0


class UsageQuery(BaseModel):
    """The query of both usage routes. Unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(default=None, alias="from")
    end: str | None = Field(default=None, alias="to")


class UsageApi:
    def __init__(self, engine: Engine, tenants: TenantStore, clock: Clock) -> None:
        self._engine = engine
        self._tenants = tenants
        self._clock = clock

    def handlers(self) -> Handlers:
        return {"tenant_usage": self.tenant_usage, "usage": self.usage, "overview": self.overview}

    async def overview(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self._overview))

    def _overview(self) -> JSONObject:
        names = {t.id: t.name for t in self._tenants.tenants()}
        by_tenant: dict[int, dict[str, int]] = {t: {} for t in names}
        for (tenant_id, _, status), n in self._engine.instance_counts().items():
            counts = by_tenant.setdefault(tenant_id, {})
            counts[status] = counts.get(status, 0) + n
        stalled = self._engine.stalled(limit=100)
        stalled_by = {t: 0 for t in by_tenant}
        for run in stalled:
            stalled_by[run.tenant_id] = stalled_by.get(run.tenant_id, 0) + 1
        return {
            "tenants": [
                {"tenant": names.get(t, str(t)), "instances": dict(n), "stalled": stalled_by[t]}
                for t, n in by_tenant.items()
            ],
            "stalled": [
                {"tenant": names.get(r.tenant_id, str(r.tenant_id)), "workflow": r.workflow,
                 "id": r.id, "since": iso(r.since)}
                for r in stalled
            ],
        }  # fmt: skip

    async def tenant_usage(self, request: Request) -> Response:
        start, end = self._span(request)
        name = request.path_params["tenant"]
        tenant = await run_in_threadpool(self._tenants.tenant, name)  # 404 when not there
        report = await run_in_threadpool(self._engine.usage, tenant.id, start, end)
        return JSONResponse(usage_view(name, start, end, report))

    async def usage(self, request: Request) -> Response:
        start, end = self._span(request)
        caller = caller_of(request)
        report = await run_in_threadpool(self._engine.usage, caller.tenant_id, start, end)
        return JSONResponse(usage_view(caller.tenant_name, start, end, report))

    def _span(self, request: Request) -> tuple[float, float]:
        query = UsageQuery.model_validate(dict(request.query_params.items()))
        end = self._clock.now() if query.end is None else _instant(query.end, "to")
        start = end - DEFAULT_SPAN if query.start is None else _instant(query.start, "from")
        # What a schema cannot say of two parameters: refused with a code of its own.
        if start > end:
            raise InvalidInput("from: must not be after to", code=SPAN_REFUSED)
        if end - start > MAX_SPAN:
            raise InvalidInput(
                "from: the span from from to to must not exceed 366 days", code=SPAN_REFUSED
            )
        return start, end


def _instant(value: str, what: str) -> float:
    """``value`` as epoch seconds, within the years 1 to 9999 in UTC (a time near either end
    with an offset could fall outside them)."""
    at = parse_instant(value, what=what)  # InvalidInput, naming the parameter, when not ISO
    return min(max(at, _FIRST), _LAST)


def usage_view(tenant: str, start: float, end: float, report: UsageReport) -> JSONObject:
    """The JSON of ``GET .../usage``."""
    return {
        "tenant": tenant,
        "from": iso(start),
        "to": iso(end),
        "totals": counts(report.totals),
        "hours": [{"hour": iso(hour), **counts(used)} for hour, used in report.hours],
    }


def counts(used: Usage) -> JSONObject:
    return {
        "instances_created": used.instances_created,
        "steps": used.steps,
        "step_attempts": used.step_attempts,
        "cpu_ms": used.cpu_us / 1000,
        "wall_ms": used.wall_us / 1000,
        "egress_requests": used.egress_requests,
        "egress_bytes": used.egress_bytes,
        "storage_bytes": used.storage_bytes,
    }
