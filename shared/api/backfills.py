"""POST|GET /backfills/{tenantId} and GET|DELETE /backfills/{tenantId}/{jobId}: re-stream a tenant's
history from the analytics store into one destination, as a resumable, audited job (docs/backfill.md).

The handlers validate and record; the work runs in the queue trigger `run_backfill`
(shared/delivery/backfill.py). A job is found only in its tenant's partition: another tenant's job id
answers 404 here, and the request adapter refuses another tenant's path with 403 first.
"""
from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timedelta, timezone

from shared.api import paging
from shared.api.audit import record_audit
from shared.api.params import int_param, tenant_param, text_path_param
from shared.app.services import get_services
from shared.core import bindings, limits
from shared.core.backfill import BackfillRequest, JobRecord, JobState, estimate, iso_of_ms
from shared.core.events import utc_now_iso
from shared.core.validation import field_error
from shared.delivery.backfill import ACTOR, BackfillRunner, record_finish
from shared.delivery.backfill_store import Conflict, TooManyJobs, is_job_id, new_job_id
from shared.http.adapter import read_model
from shared.http.outages import RETRY_AFTER_SECONDS
from shared.http.types import ApiRequest, ApiResponse, ProblemError, json_response

log = logging.getLogger("grc.backfill")
MAX_BODY_BYTES = 16 * 1024
PAGE_SCOPE = "backfills"
MAX_JOB_ID_CHARS = 64  # the jobId path parameter (its OpenAPI schema too); the ids issued are 25
RETRY_AFTER_DEFAULT = 60  # seconds, when no running job can say when it will end
RETRY_AFTER_MAX = 3600


def _bad(loc: list[str | int], detail: str) -> ProblemError:
    err = field_error(loc, detail, "value_error").model_dump(exclude_none=True)
    return ProblemError(400, "Bad Request", f"invalid backfill: {err['field']} {detail}", errors=[err])


def _location(tenant: str, job_id: str) -> str:
    return f"/backfills/{tenant}/{job_id}"


async def start_backfill(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    body = read_model(req, BackfillRequest, MAX_BODY_BYTES, "the backfill request")
    if "BACKFILL_QUEUE" in bindings.unset():
        # The host loads no run_backfill without it: a job accepted now would never run.
        log.error("backfill refused: %s", bindings.describe(["BACKFILL_QUEUE"]))
        raise ProblemError(503, "Service Unavailable", "backfill is not configured on this service",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    services = get_services()
    now = datetime.now(timezone.utc)
    if body.to - now > timedelta(seconds=limits.MAX_CLOCK_SKEW_SECONDS):
        raise _bad(["to"], f"must not be more than {limits.MAX_CLOCK_SKEW_SECONDS} s in the future")
    config = await services.configs.get(tenant)
    horizon = now - timedelta(days=config.retentionDays)
    if body.from_ < horizon:
        raise _bad(["from"], f"is before the tenant's retention of {config.retentionDays} days "
                             f"(the analytics store keeps nothing before {utc_now_iso(horizon)})")
    if not config.enabled or not any(d.type == body.destination and d.enabled for d in config.destinations):
        what = "the tenant's stream is disabled" if not config.enabled else \
            f"destination {body.destination!r} is not enabled in the tenant's stream config"
        raise ProblemError(409, "Conflict", f"{what}; enable it with PUT /stream-config/{tenant} first",
                           type_="urn:grc:problem:backfill-destination-not-enabled",
                           errors=[field_error(["destination"], what, "not_enabled").model_dump(exclude_none=True)])
    from_ms, to_ms = body.range_ms()
    job = JobRecord(
        jobId=new_job_id(), tenantId=tenant, fromMs=from_ms, toMs=to_ms, destination=body.destination,
        eventTypes=sorted({t.value for t in body.eventTypes}) if body.eventTypes else None,
        sources=sorted({s.value for s in body.sources}) if body.sources else None,
        createdAt=utc_now_iso(), createdBy=getattr(req.principal, "subject", "") or "",
    )
    try:
        await services.backfills.create(job, services.settings.backfill_max_concurrent_jobs)
    except TooManyJobs as exc:
        wait = _retry_after(exc.active)
        raise ProblemError(429, "Too Many Requests",
                           f"the tenant has {len(exc.active)} backfill(s) queued or running, the most "
                           f"BACKFILL_MAX_CONCURRENT_JOBS allows; retry after {wait} s or cancel one",
                           type_="urn:grc:problem:backfill-limit", headers={"Retry-After": str(wait)},
                           activeJobs=[j.jobId for j in exc.active]) from exc
    try:
        await BackfillRunner(services).enqueue(job)
    except Exception:
        await services.backfills.delete(job)  # nothing will run it: no job, no slot
        raise  # the adapter answers 503 for a queue that is down
    view = job.view(time.time()).body()
    await record_audit(req, tenant, "backfill.start", f"backfills/{tenant}/{job.jobId}", None, view)
    return json_response(view, 202, headers={"Location": _location(tenant, job.jobId)})


def _retry_after(active: list[JobRecord]) -> int:
    """Seconds until the soonest of the running jobs is expected to end (the default without one)."""
    lefts = [left for j in active if (left := estimate(j, time.time())[1]) is not None]
    wait = min(lefts) if lefts else RETRY_AFTER_DEFAULT
    return int(min(RETRY_AFTER_MAX, max(1, math.ceil(wait))))


async def list_backfills(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    limit = int_param(req, "limit", 50, 1, 1000)
    after = paging.position(req, PAGE_SCOPE, tenant, {}, valid=is_job_id)
    page = await get_services().backfills.list(tenant, limit, after)
    now = time.time()
    return json_response({"tenantId": tenant, "count": len(page.items), "truncated": page.truncated,
                          "jobs": [j.view(now).body() for j in page.items],
                          "continuationToken": paging.token(PAGE_SCOPE, tenant, {}, page.after)})


async def _job(req: ApiRequest) -> tuple[JobRecord, str]:
    tenant = tenant_param(req)
    job_id = text_path_param(req, "jobId", MAX_JOB_ID_CHARS)
    got = await get_services().backfills.read(tenant, job_id)
    if got is None:
        raise ProblemError(404, "Not Found", f"no backfill {job_id!r} for this tenant")
    return got


async def get_backfill(req: ApiRequest) -> ApiResponse:
    job, _ = await _job(req)
    return json_response(job.view(time.time()).body())


async def cancel_backfill(req: ApiRequest) -> ApiResponse:
    """202: cancelled, or cancelling (a chunk runs now: it stops at its next checkpoint, within one
    sub-batch); repeated, the same. 409 for a job that completed or failed."""
    services = get_services()
    for _ in range(5):
        job, etag = await _job(req)
        if job.state in (JobState.COMPLETED, JobState.FAILED):
            raise ProblemError(409, "Conflict", f"the backfill has {job.state.value}; there is nothing to cancel")
        if job.state in (JobState.CANCELLED, JobState.CANCELLING):
            return json_response(job.view(time.time()).body(), 202, headers={"Location": _location(job.tenantId, job.jobId)})
        before = job.state.value
        job.cancelRequestedAt, job.cancelRequestedBy = utc_now_iso(), getattr(req.principal, "subject", "") or ""
        # A chunk holding the job stops at its next checkpoint; with none running (queued, between
        # chunks, waiting for a failing destination) the job ends here and its message finds it so.
        running = job.running and job.ownerUntil > time.time()
        job.state = JobState.CANCELLING if running else JobState.CANCELLED
        if not running:
            job.finishedAt, job.owner = utc_now_iso(), None
        job.updatedAt = utc_now_iso()
        try:
            await services.backfills.save(job, etag)
        except Conflict:
            continue  # the runner checkpointed meanwhile: look again
        target = f"backfills/{job.tenantId}/{job.jobId}"
        await record_audit(req, job.tenantId, "backfill.cancel", target, {"state": before},
                           {"state": job.state.value, "position": iso_of_ms(job.positionMs) if job.positionMs else None})
        if job.state == JobState.CANCELLED:
            await services.backfills.release_slot(job)
            await record_finish(services, job, ACTOR)
        return json_response(job.view(time.time()).body(), 202, headers={"Location": _location(job.tenantId, job.jobId)})
    raise ProblemError(409, "Conflict", "the backfill kept changing; try again")
