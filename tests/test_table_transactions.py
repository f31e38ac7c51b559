"""shared/storage/table_transactions.py against Azurite: the same request as the SDK's
`submit_transaction` (upserts and deletes), entities stored as the SDK stores them, and every failure
left to the SDK."""
from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import AioHttpTransport, AsyncHttpTransport
from azure.data.tables import EdmType, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.storage.clients import CLIENT_OPTIONS
from shared.storage.table_transactions import committed, delete_all, upsert_all


class RecordingTransport(AsyncHttpTransport):
    """The SDK's own aiohttp transport, keeping each transaction request it sends (to compare them on
    the wire)."""

    def __init__(self) -> None:
        self.inner = AioHttpTransport()
        self.requests: list[Any] = []

    async def send(self, request: Any, **kwargs: Any) -> Any:
        if request.url.endswith("/$batch"):
            self.requests.append(request)
        return await self.inner.send(request, **kwargs)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> "RecordingTransport":
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.inner.__aexit__(*args)


@pytest.fixture
async def recorded(storage_connection_string: str) -> AsyncIterator[tuple[TableClient, RecordingTransport]]:
    transport = RecordingTransport()
    service = TableServiceClient.from_connection_string(storage_connection_string, transport=transport,
                                                        **CLIENT_OPTIONS)
    name = "tx" + uuid.uuid4().hex[:12]
    await service.create_table(name)
    try:
        yield service.get_table_client(name), transport
    finally:
        await service.delete_table(name)
        await service.close()


def body_of(request: Any) -> bytes:
    content = getattr(request, "content", None)
    return content if isinstance(content, bytes) else request.data


def normalised(body: bytes) -> bytes:
    """Random boundaries and the date apart."""
    body = re.sub(rb"(batch|changeset)_[0-9a-f-]{36}", rb"\1_X", body)
    return re.sub(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", b"DATE", body)


# Keys needing quoting in the URL, text needing JSON escapes, and every value type the SDK annotates.
def awkward(pk: str, n: int) -> dict[str, Any]:
    return {"PartitionKey": pk, "RowKey": f"00{n}_it's a key é&+%;=,", "Text": 'quote " backslash \\ newline\n é 😀',
            "Bytes": bytes(range(256)), "Small": 7, "Big": (2**40, EdmType.INT64), "Ratio": 0.25, "Flag": True, "Gone": None}


async def test_the_request_is_the_sdks_byte_for_byte(recorded: tuple[TableClient, RecordingTransport]) -> None:
    table, transport = recorded
    pk = "ten'ant é x_2026120511_01"
    await table.submit_transaction([("upsert", awkward(pk, n), {"mode": UpdateMode.REPLACE}) for n in range(3)])
    await upsert_all(table, [awkward(pk, n) for n in range(3)])
    sdk, ours = transport.requests
    assert normalised(body_of(ours)) == normalised(body_of(sdk))
    assert b"PUT " in body_of(ours) and body_of(ours).count(b"Content-ID: ") == 3
    for header in ("x-ms-version", "DataServiceVersion", "MaxDataServiceVersion", "Accept", "Content-Length"):
        assert ours.headers[header] == sdk.headers[header], header
    assert re.sub("batch_.*", "", ours.headers["Content-Type"]) == re.sub("batch_.*", "", sdk.headers["Content-Type"])
    assert ours.headers["Authorization"].startswith("SharedKey ")  # the client's own pipeline signed it
    assert ours.url == sdk.url and ours.method == sdk.method == "POST"


async def test_entities_are_stored_as_the_sdk_stores_them_and_rewriting_keeps_one_row(
    recorded: tuple[TableClient, RecordingTransport],
) -> None:
    table, transport = recorded
    ours = [awkward("p1", n) for n in range(100)]  # a full transaction
    sdk = [awkward("p2", n) for n in range(100)]
    await upsert_all(table, ours)
    assert len(transport.requests) == 1  # committed by our request alone, no resubmission
    await table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in sdk])
    for a, b in zip(ours, sdk):
        got_a = await table.get_entity(a["PartitionKey"], a["RowKey"])
        got_b = await table.get_entity(b["PartitionKey"], b["RowKey"])
        assert {k: v for k, v in got_a.items() if k != "PartitionKey"} == \
               {k: v for k, v in got_b.items() if k != "PartitionKey"}
        assert got_a["Text"] == a["Text"] and got_a["Bytes"] == a["Bytes"] and got_a["Small"] == 7
    # The same entities again (a retry) replace the rows: still one per key, and a property dropped
    # from the entity is gone (replace, not merge).
    again = [{k: v for k, v in e.items() if k != "Flag"} for e in ours]
    await upsert_all(table, again)
    rows = [r async for r in table.query_entities("PartitionKey eq 'p1'")]
    assert len(rows) == 100 and all("Flag" not in r for r in rows)


async def test_a_refused_transaction_raises_the_sdks_error_and_commits_nothing(
    recorded: tuple[TableClient, RecordingTransport],
) -> None:
    table, transport = recorded
    good = {"PartitionKey": "p", "RowKey": "good", "Text": "fine"}
    too_long = {"PartitionKey": "p", "RowKey": "bad", "Text": "x" * 40_000}  # a string holds 32 K UTF-16 units
    with pytest.raises(TableTransactionError) as raised:
        await upsert_all(table, [good, too_long])
    assert raised.value.status_code == 400
    assert len(transport.requests) == 2  # ours, then the same operations through submit_transaction
    assert [r async for r in table.query_entities("PartitionKey eq 'p'")] == []


async def test_a_delete_request_is_the_sdks_byte_for_byte_and_deletes(
    recorded: tuple[TableClient, RecordingTransport],
) -> None:
    table, transport = recorded
    pk = "ten'ant é x_2026120511_01"
    keys = [{"PartitionKey": pk, "RowKey": awkward(pk, n)["RowKey"]} for n in range(3)]
    await upsert_all(table, [awkward(pk, n) for n in range(3)])
    await table.submit_transaction([("delete", k) for k in keys])
    await upsert_all(table, [awkward(pk, n) for n in range(3)])
    await delete_all(table, keys)
    sdk, ours = transport.requests[1], transport.requests[3]
    assert normalised(body_of(ours)) == normalised(body_of(sdk))
    assert body_of(ours).count(b"DELETE ") == 3 and b"If-Match: *" in body_of(ours)
    for header in ("x-ms-version", "DataServiceVersion", "MaxDataServiceVersion", "Accept", "Content-Length"):
        assert ours.headers[header] == sdk.headers[header], header
    assert len(transport.requests) == 4  # committed by our request alone
    assert [r async for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": pk})] == []


async def test_an_entity_already_gone_counts_as_deleted(
    recorded: tuple[TableClient, RecordingTransport],
) -> None:
    """Two purges at once: one absent entity refuses the transaction (404 through submit_transaction, as
    the SDK reports it), so the keys are deleted one by one, and the absent one counts as deleted."""
    table, transport = recorded
    await upsert_all(table, [{"PartitionKey": "p", "RowKey": "here"}, {"PartitionKey": "p", "RowKey": "too"}])
    await delete_all(table, [{"PartitionKey": "p", "RowKey": "here"}, {"PartitionKey": "p", "RowKey": "gone"},
                             {"PartitionKey": "p", "RowKey": "too"}])
    assert len(transport.requests) == 3  # the upsert, ours, then the same operations by submit_transaction
    assert [r["RowKey"] async for r in table.query_entities("PartitionKey eq 'p'")] == []


async def test_a_missing_table_raises_as_submit_transaction_does(
    recorded: tuple[TableClient, RecordingTransport],
) -> None:
    table, _ = recorded
    await table.delete_table()
    ops = [{"PartitionKey": "p", "RowKey": "r"}]
    with pytest.raises(HttpResponseError) as sdk:
        await table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in ops])
    with pytest.raises(HttpResponseError) as ours:
        await upsert_all(table, ops)
    assert type(ours.value) is type(sdk.value)
    assert (ours.value.status_code, ours.value.error_code) == (sdk.value.status_code, sdk.value.error_code) == \
           (404, "TableNotFound")
    await table.create_table()  # for the fixture's delete


def reply(*statuses: int) -> bytes:
    parts = b"".join(b"--changesetresponse_1\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 %d Status\r\n"
                     b"DataServiceVersion: 3.0;\r\n\r\n{\"odata.error\":\"x\\nHTTP/1.1 204 \"}\r\n" % s
                     for s in statuses)
    return (b"--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_1\r\n\r\n" + parts
            + b"--changesetresponse_1--\r\n--batchresponse_1--\r\n")


def test_committed_only_with_one_success_status_per_operation() -> None:
    assert committed(202, reply(204, 204, 204), 3)
    assert not committed(202, reply(204, 204), 3)  # a short reply is not a success
    assert not committed(202, reply(204, 204, 204, 204), 3)
    assert not committed(202, reply(400), 3)  # the service's answer to a refused transaction
    assert not committed(202, reply(204, 409, 204), 3)
    assert not committed(400, reply(204, 204, 204), 3)
    assert not committed(202, b"", 1)
