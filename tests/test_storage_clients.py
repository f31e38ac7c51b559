"""The Storage clients fail fast on a dead endpoint (shared/storage/clients.py): the delivery path's
deadlines (a destination attempt, parking a failed delivery: 10 s each) must see the failure, not
the SDK's own retry waits. Real sockets: a port nothing listens on refuses every connection."""
from __future__ import annotations

import time

import pytest
from azure.core.exceptions import ServiceRequestError

from localdev import services
from shared.core.settings import Settings
from shared.storage.clients import queue_client, queue_service, table_service

# Two retries, each waiting about a second at most: what CLIENT_OPTIONS and QUEUE_CLIENT_OPTIONS ask for.
REFUSED_WITHIN_SECONDS = 3.0


def _dead_account() -> Settings:
    port = services.free_port()  # free: nothing listens there
    conn = services.azurite_connection_string(port, port, port)
    return Settings.from_env({"STORAGE_CONNECTION_STRING": conn})


async def test_a_queue_send_to_a_refused_endpoint_fails_within_seconds() -> None:
    """The Queue SDK's own retry policy waited 18 s, then 24 s (+-3 s): a refused send failed after ~38 s."""
    qs = queue_service(_dead_account())
    q = queue_client(qs, "retries")
    try:
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(ServiceRequestError):
                await q.send_message("parked delivery")
            took = time.monotonic() - t0
            assert 0.5 < took < REFUSED_WITHIN_SECONDS, took  # it did retry, briefly
    finally:
        await q.close()
        await qs.close()


async def test_a_table_write_to_a_refused_endpoint_fails_within_seconds() -> None:
    ts = table_service(_dead_account())
    table = ts.get_table_client("streamconfigs")
    try:
        t0 = time.monotonic()
        with pytest.raises(ServiceRequestError):
            await table.upsert_entity({"PartitionKey": "t", "RowKey": "streamconfig"})
        assert time.monotonic() - t0 < REFUSED_WITHIN_SECONDS
    finally:
        await table.close()
        await ts.close()
