"""A transaction of upserts (replace) or of deletes, of one partition, without the SDK's multipart encoder.

Why: `TableClient.submit_transaction` (azure-data-tables 12.7, azure-core 1.41) writes a transaction's
multipart body and reads its multipart reply with the standard library's `email` package (header
registry, generator, feed parser). In py-spy samples of `python -m bench.analytics_destination` the
SDK's transaction code held about 85 % of the client's busy time (its multipart body and the reply's
parsing most of it), and the client spent ~360 us of CPU per entity, more than Azurite's ~300 us to
store it: the client, not the store, bounded the rate. Here the body is written directly and the
reply is read by its status lines: ~60 us per entity in all (docs/performance.md).

What stays the SDK's, so nothing about the request changes:
- the body is byte for byte what `submit_transaction` sends for the same upserts or deletes (apart
  from its random boundaries and the date): tests/test_table_transactions.py compares the two on the wire;
  each entity's JSON is the SDK's own `_add_entity_properties` (the OData type annotations);
- the request goes through the TableClient's own pipeline (`_client.send_request`, as
  `submit_transaction` itself does): its authentication (shared key or Entra ID token), retries,
  timeouts and headers;
- every reply that is not a plain success, an outer 202 carrying exactly one 2xx status per
  operation, is not interpreted here: the same operations go to `submit_transaction`, whose
  exceptions (TableTransactionError, RequestTooLargeError, ResourceNotFoundError, ...) the caller
  already handles. That is safe: a transaction that failed committed nothing (entity group
  transactions are atomic), and upserts and unconditional deletes are idempotent. So an entity counts
  as written (or deleted) only when the service answered 2xx for it.

Users: the analytics destination's writes, and the retention purge's deletes (the purge deletes
every entity the destination wrote, so the SDK's ~350 us per entity bounded it the same way).

The service's reply to a transaction (Microsoft Learn, *Performing entity group transactions*,
https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions): 202
Accepted for the batch, its change set holding one response per operation, in order, when all
succeeded, or one error response naming the failed operation when the change set was refused.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote
from wsgiref.handlers import format_date_time

from azure.core.rest import HttpRequest
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables._serialize import _add_entity_properties  # the SDK's entity encoding, kept identical
from azure.data.tables.aio import TableClient

# One status line per operation in the changeset reply ("HTTP/1.1 204 No Content"); JSON error bodies
# escape their newlines, so a status line only ever starts a real line.
_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ", re.MULTILINE)


def _key(value: str) -> str:
    """A key in the entity's URL: quotes doubled (OData), then percent-encoded, as the SDK does."""
    return quote(value.replace("'", "''"), safe="")


def encode(table: TableClient, entities: Sequence[Mapping[str, Any]], *, delete: bool = False) -> HttpRequest:
    """The `$batch` request upserting (replace) `entities`, or deleting them by their keys
    (unconditionally, `If-Match: *`), all of one partition."""
    base = f"{table.scheme}://{table._primary_hostname}"  # noqa: SLF001 - the SDK's own batch URL
    version = table._client._config.version  # noqa: SLF001 - the sub-requests' x-ms-version, as the SDK's
    date = format_date_time(time.time())
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    name = quote(table.table_name, safe="")
    parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
    for n, entity in enumerate(entities):
        keys = f"PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}'"
        url = f"{base}/{name}({keys})"
        if delete:  # the SDK's delete sub-request: no body, any version
            body = b""
            head = (f"DELETE {url} HTTP/1.1\r\nx-ms-version: {version}\r\nDataServiceVersion: 3.0\r\n"
                    f"Accept: application/json;odata=minimalmetadata\r\nIf-Match: *\r\n")
        else:
            body = json.dumps(_add_entity_properties(entity)).encode()
            head = (f"PUT {url} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    f"x-ms-version: {version}\r\nDataServiceVersion: 3.0\r\nAccept: application/json\r\n")
        parts.append(
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {n}\r\n\r\n{head}x-ms-date: {date}\r\nDate: {date}\r\n\r\n".encode())
        parts.append(body)
        parts.append(b"\r\n")
    parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
    return HttpRequest(
        "POST", f"{base}/$batch", content=b"".join(parts),
        headers={"x-ms-version": table.api_version, "DataServiceVersion": "3.0",
                 "MaxDataServiceVersion": "3.0;NetFx", "Content-Type": f"multipart/mixed; boundary={batch}",
                 "Accept": "application/json"})


def committed(status: int, body: bytes, operations: int) -> bool:
    """Whether a `$batch` reply says every one of `operations` operations was applied."""
    if status != 202:
        return False
    statuses = _STATUS_LINE.findall(body)
    return len(statuses) == operations and all(s.startswith(b"2") for s in statuses)


async def _submit(table: TableClient, entities: Sequence[Mapping[str, Any]], delete: bool) -> None:
    # stream=True and read(), as submit_transaction does: the pipeline then leaves the multipart body alone
    response = await table._client.send_request(  # noqa: SLF001 - the module docstring says why
        encode(table, entities, delete=delete), stream=True)
    body = await response.read()
    if committed(response.status_code, body, len(entities)):
        return
    await table.submit_transaction([("delete", e) if delete else ("upsert", e, {"mode": UpdateMode.REPLACE})
                                    for e in entities])


async def upsert_all(table: TableClient, entities: Sequence[Mapping[str, Any]]) -> None:
    """Upsert (replace) `entities`, all of one partition, at most 100, in one transaction: returns
    when all are committed, raises as `submit_transaction` does otherwise."""
    await _submit(table, entities, delete=False)


async def delete_all(table: TableClient, keys: Sequence[Mapping[str, Any]]) -> None:
    """Delete the entities of `keys` (PartitionKey, RowKey), all of one partition, at most 100, in one
    transaction: returns when all are gone, raises as `submit_transaction` does otherwise.

    An entity already gone counts as deleted (a purge run by hand beside the hourly one, a retry beside
    a slow run): one absent entity refuses the whole transaction (TableTransactionError 404), so the
    keys are then deleted one by one, and the SDK's `delete_entity` takes an absent entity as deleted."""
    try:
        await _submit(table, keys, delete=True)
    except TableTransactionError as exc:
        if exc.status_code != 404:
            raise
        for key in keys:
            await table.delete_entity(key["PartitionKey"], key["RowKey"])
