"""Backfill jobs in an Azure Table (BACKFILL_TABLE): the job record, which is also its checkpoint,
and the tenant's job slots (docs/backfill.md).

- Job row: PartitionKey = tenant, RowKey = jobId = `bf-{inverted ms:013}-{8 hex}` (a partition lists
  newest first), `State` and the record as JSON (`Doc`). Every write after the first is conditional
  on the ETag read (If-Match): the runner's checkpoint and the API's cancel never overwrite each
  other, and a runner that lost its job learns it at its next checkpoint.
- Slot rows: RowKey `~slot-{i:02}` (after every job id), `JobId`: a tenant has at most
  BACKFILL_MAX_CONCURRENT_JOBS of them. A slot is taken by inserting its row (insert fails if it
  exists: two requests cannot take one slot), or, when its job has finished (or its record is gone:
  a job's record is written before it takes a slot), by replacing the row conditionally on its ETag. Finished jobs release theirs; one that could not
  is released by the next request that finds its job finished.
- Kept: the newest KEEP_JOBS records of a tenant. Each new job deletes the tenant's finished ones
  past them (records were never deleted: a row per request, for the table's life).
"""
from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from shared.core.answer_cap import json_size
from shared.core.backfill import TERMINAL, JobRecord
from shared.storage.capped_query import CappedPage, capped_list
from shared.storage.lazy import LazyTable

log = logging.getLogger("grc.backfill")

MAX_TS_MS = 9_999_999_999_999
JOB_ID = re.compile(r"bf-\d{13}-[0-9a-f]{8}")
SLOT_PREFIX = "~slot-"
KEEP_JOBS = 100  # job records kept per tenant (newest first); finished ones past them are deleted
_FINISHED = frozenset(state.value for state in TERMINAL)


class Conflict(Exception):
    """The record changed since it was read (ETag mismatch) or is gone."""


class TooManyJobs(Exception):
    def __init__(self, active: list[JobRecord]) -> None:
        super().__init__(f"{len(active)} backfill(s) queued or running")
        self.active = active


def new_job_id(now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000)
    return f"bf-{MAX_TS_MS - ms:013d}-{secrets.token_hex(4)}"


def is_job_id(value: str) -> bool:
    return JOB_ID.fullmatch(value) is not None


def _sized_job(entity: dict[str, Any]) -> tuple[JobRecord, int]:
    job = _job(entity)
    return job, json_size(job.model_dump_json())  # the stored record: the view answered is smaller


class BackfillStore:
    def __init__(self, tables: TableServiceClient, table_name: str) -> None:
        self._table = LazyTable(tables, table_name)

    # ---- jobs ------------------------------------------------------------------------------

    async def create(self, job: JobRecord, max_jobs: int) -> str:
        """Insert `job`, then take a slot of the tenant for it; its ETag. TooManyJobs (the record
        dropped again) when every slot is held by a job still queued or running.

        The record goes first so that a slot row's job always has a record: a slot whose holder has no
        record is free. Taking the slot first let a racing request see a slot just taken, find no
        record yet, and take it over: two jobs in one slot (tests/test_backfill.py, the race)."""
        result = await self._table.call("create_entity", self._entity(job))
        try:
            job.slot = await self._take_slot(job.tenantId, job.jobId, max_jobs)
        except BaseException:
            await self._drop_record(job)
            raise
        etag = await self.save(job, str(result["etag"]))
        try:
            await self._prune(job.tenantId)
        except Exception as exc:  # noqa: BLE001 - the job stands (it holds a slot); the next one prunes
            log.warning("backfill records of %s not pruned: %s", job.tenantId, type(exc).__name__)
        return etag

    async def _prune(self, tenant: str) -> None:
        """Delete the tenant's finished jobs past its newest KEEP_JOBS (queued or running ones stay)."""
        old: list[str] = []
        async with self._table.reading() as table:
            rows = table.query_entities("PartitionKey eq @pk and RowKey lt @slots",
                                        parameters={"pk": tenant, "slots": SLOT_PREFIX},
                                        select=["RowKey", "State"])
            n = 0
            async for row in rows:
                n += 1
                if n > KEEP_JOBS and row.get("State") in _FINISHED:
                    old.append(str(row["RowKey"]))
        for job_id in old:
            try:
                await self._table.call("delete_entity", tenant, job_id)
            except ResourceNotFoundError:
                pass  # deleted by a concurrent request

    async def read(self, tenant: str, job_id: str) -> tuple[JobRecord, str] | None:
        if not is_job_id(job_id):
            return None
        try:
            entity = await self._table.call("get_entity", tenant, job_id)
        except ResourceNotFoundError:
            return None
        return _job(entity), str(entity.metadata["etag"])

    async def save(self, job: JobRecord, etag: str) -> str:
        """Replace the record if it is still the one read (`etag`); its new ETag. Conflict otherwise."""
        try:
            result = await self._table.call("update_entity", self._entity(job), mode=UpdateMode.REPLACE,
                                            etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise Conflict(str(job.jobId)) from exc
        return str(result["etag"])

    async def delete(self, job: JobRecord) -> None:
        """Drop a job that never started (its first chunk could not be queued) and free its slot."""
        await self._drop_record(job)
        await self.release_slot(job)

    async def _drop_record(self, job: JobRecord) -> None:
        try:
            await self._table.call("delete_entity", job.tenantId, job.jobId)
        except ResourceNotFoundError:
            pass

    async def list(self, tenant: str, limit: int, after: str | None = None) -> CappedPage[JobRecord]:
        """Newest first: up to `limit` jobs and at most the answer's byte cap of them (one at least;
        shared/core/answer_cap.py: a job is small, but its creator's subject and last error are the
        caller's text); `after` = the last jobId of the previous page (the API signs it as a
        continuation token), and the page's `after` the position of the next page (None: none)."""
        if after is not None and not is_job_id(after):
            raise ValueError("not a backfill position")
        page: CappedPage[JobRecord] = CappedPage([], None, False)
        async with self._table.reading() as table:
            page = await capped_list(table, "PartitionKey eq @pk and RowKey lt @slots",
                                     {"pk": tenant, "slots": SLOT_PREFIX}, limit=limit, after=after,
                                     item=_sized_job)
        return page

    # ---- slots -----------------------------------------------------------------------------

    async def active(self, tenant: str) -> list[JobRecord]:
        """The jobs holding the tenant's slots that are still queued or running."""
        out = []
        async with self._table.reading() as table:
            async for row in table.query_entities("PartitionKey eq @pk and RowKey ge @slots",
                                                  parameters={"pk": tenant, "slots": SLOT_PREFIX}):
                got = await self.read(tenant, str(row.get("JobId", "")))
                if got is not None and not got[0].terminal:
                    out.append(got[0])
        return out

    async def _take_slot(self, tenant: str, job_id: str, max_jobs: int) -> int:
        for i in range(max_jobs):
            key = f"{SLOT_PREFIX}{i:02d}"
            try:
                await self._table.call("create_entity", {"PartitionKey": tenant, "RowKey": key, "JobId": job_id})
                return i
            except ResourceExistsError:
                pass
            try:
                row = await self._table.call("get_entity", tenant, key)
            except ResourceNotFoundError:  # released since: try it again next time round
                continue
            holder = await self.read(tenant, str(row.get("JobId", "")))
            if holder is not None and not holder[0].terminal:
                continue
            try:  # the holder finished: take its slot, unless another request just did
                await self._table.call("update_entity", {"PartitionKey": tenant, "RowKey": key, "JobId": job_id},
                                       mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                                       match_condition=MatchConditions.IfNotModified)
                return i
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        raise TooManyJobs(await self.active(tenant))

    async def release_slot(self, job: JobRecord) -> None:
        """Free the job's slot if it still holds it (best effort: a finished job's slot is taken over anyway)."""
        if job.slot is None:
            return
        key = f"{SLOT_PREFIX}{job.slot:02d}"
        try:
            row = await self._table.call("get_entity", job.tenantId, key)
            if row.get("JobId") == job.jobId:
                await self._table.call("delete_entity", job.tenantId, key, etag=row.metadata["etag"],
                                       match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass

    @staticmethod
    def _entity(job: JobRecord) -> dict[str, Any]:
        return {"PartitionKey": job.tenantId, "RowKey": job.jobId, "State": job.state.value,
                "Doc": orjson.dumps(job.model_dump(mode="json")).decode()}


def _job(entity: dict[str, Any]) -> JobRecord:
    return JobRecord.model_validate(orjson.loads(entity["Doc"]))
