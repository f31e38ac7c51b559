"""Event Hubs over AMQP (the "kafka" destination with transport "amqp"), tested at the SDK boundary.

No Event Hubs (or AMQP emulator) runs on this machine, so `FakeEventHubProducerClient` stands in
for `azure.eventhub.aio.EventHubProducerClient`: it hands out the SDK's real `EventDataBatch`
(real size accounting, real `ValueError` when full, real partition key) and records what
`send_batch` got. Everything else is the production code path; only the client is injected
through the destination's `amqp_client_factory`.
"""
from __future__ import annotations

import asyncio
import gzip
from typing import Any

import orjson
import pytest
from azure.eventhub import EventData, EventDataBatch
from azure.eventhub.aio import EventHubProducerClient
from azure.eventhub.exceptions import AuthenticationError, ConnectionLostError

from shared.core.destination_options import KafkaOptions
from shared.core.settings import Settings
from shared.core.streamconfig import StreamConfig
from shared.destinations.base import publish_one
from shared.destinations.eventhubs_amqp import EventHubsAmqpSender
from shared.destinations.kafka import KafkaDestination
from tests.kafka_helpers import big_event, make_event

AMQP = KafkaOptions(transport="amqp")


class Sent:
    def __init__(self, hub: str, batch: EventDataBatch) -> None:
        self.hub = hub
        self.partition_key = batch._partition_key
        self.size = batch.size_in_bytes
        self.max_size = batch.max_size_in_bytes
        self.events: list[EventData] = list(batch._internal_events)

    def bodies(self) -> list[bytes]:
        return [b"".join(e.body) for e in self.events]

    def event_ids(self) -> list[str]:
        return [props(e)["eventId"] for e in self.events]


class FakeEventHubs:
    """The namespace: one FakeEventHubProducerClient per event hub, and the log of sent batches."""

    def __init__(self, max_message_size: int = 1_048_576) -> None:
        self.max_message_size = max_message_size
        self.sent: list[Sent] = []
        self.clients: dict[str, FakeEventHubProducerClient] = {}
        self.fail_on_send: dict[int, Exception] = {}  # nth send_batch call (1-based) -> error
        self.send_delay = 0.0
        self.calls = 0

    def factory(self, hub: str) -> "FakeEventHubProducerClient":
        client = self.clients[hub] = FakeEventHubProducerClient(self, hub)
        return client


class FakeEventHubProducerClient:
    """Stands in for azure.eventhub.aio.EventHubProducerClient (create_batch/send_batch/close)."""

    def __init__(self, ns: FakeEventHubs, hub: str) -> None:
        self.ns = ns
        self.hub = hub
        self.closed = False

    async def create_batch(self, *, partition_key: str | None = None,
                           max_size_in_bytes: int | None = None) -> EventDataBatch:
        return EventDataBatch(max_size_in_bytes=max_size_in_bytes or self.ns.max_message_size,
                              partition_key=partition_key)

    async def send_batch(self, event_data_batch: EventDataBatch, *, timeout: float | None = None) -> None:
        self.ns.calls += 1
        await asyncio.sleep(self.ns.send_delay)
        err = self.ns.fail_on_send.get(self.ns.calls)
        if err is not None:
            raise err
        self.ns.sent.append(Sent(self.hub, event_data_batch))

    async def get_eventhub_properties(self) -> dict[str, Any]:
        return {"eventhub_name": self.hub, "partition_ids": ["0", "1", "2", "3"]}

    async def close(self) -> None:
        self.closed = True


def amqp_dest(ns: FakeEventHubs, **env: str) -> KafkaDestination:
    return KafkaDestination(Settings.from_env(env), amqp_client_factory=ns.factory)


def stream(**kw: Any) -> StreamConfig:
    return StreamConfig.model_validate({"tenantId": "tenant-a", "destinations": [{"type": "kafka"}], **kw})


def props(e: EventData) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in e.properties.items()}


async def test_batches_per_partition_key_with_headers_as_properties() -> None:
    ns = FakeEventHubs()
    dest = amqp_dest(ns)
    events = [make_event(t, data={"n": n}) for n in range(5) for t in ("tenant-a", "tenant-b")]

    dels = await publish_one(dest, events, AMQP, stream(topics=["grc-hub"]))

    assert [d.status for d in dels] == ["delivered"] * 10
    assert all(d.ref == "grc-hub/amqp" for d in dels)
    assert sorted(s.partition_key for s in ns.sent) == ["tenant-a", "tenant-b"]
    for s in ns.sent:
        tenant = s.partition_key
        expected = [e for e in events if e.tenantId == tenant]
        assert s.bodies() == [e.to_json() for e in expected]  # in order
        for e, ed in zip(expected, s.events):
            p = props(ed)
            assert p["eventId"] == e.eventId and p["eventType"] == e.eventType.value
            assert p["tenantId"] == tenant and p["correlationId"] == e.correlationId
            assert p["content-type"] == "application/json"
            assert ed.message_id == e.eventId and ed.correlation_id == e.correlationId
    await dest.close()
    assert ns.clients["grc-hub"].closed


async def test_setting_selects_amqp_when_options_do_not() -> None:
    ns = FakeEventHubs()
    dest = amqp_dest(ns, EVENTHUBS_TRANSPORT="amqp", KAFKA_DEFAULT_TOPIC="default-hub")
    [d] = await publish_one(dest, [make_event()], KafkaOptions(), stream())
    assert d.status == "delivered" and [s.hub for s in ns.sent] == ["default-hub"]
    assert (await dest.health()).status == "healthy"
    # The options win over the setting.
    dest2 = amqp_dest(ns, EVENTHUBS_TRANSPORT="kafka")
    assert dest2.transport(AMQP) == "amqp" and dest2.transport(KafkaOptions()) == "kafka"
    await dest.close()


async def test_new_batch_when_full_keeps_order_within_the_size_limit() -> None:
    ns = FakeEventHubs(max_message_size=8_000)
    dest = amqp_dest(ns)
    events = [make_event(data={"n": n, "pad": "p" * 1_500}) for n in range(12)]

    dels = await publish_one(dest, events, AMQP, stream(topics=["hub"]))

    assert [d.status for d in dels] == ["delivered"] * 12
    assert len(ns.sent) >= 3  # ~1.8 KB events, 8 KB batches
    assert all(s.size <= 8_000 and s.max_size == 8_000 for s in ns.sent)
    assert [i for s in ns.sent for i in s.event_ids()] == [e.eventId for e in events]


async def test_event_that_fits_no_batch_fails_for_good_others_go() -> None:
    ns = FakeEventHubs(max_message_size=4_000)
    dest = amqp_dest(ns)
    small1, huge, small2 = make_event(), make_event(data={"pad": "x" * 5_000}), make_event()
    over_limit = big_event("tenant-a", 1_000_001)

    dels = await publish_one(dest, [small1, huge, small2, over_limit], AMQP, stream(topics=["hub"]))

    assert [d.status for d in dels] == ["delivered", "failed", "delivered", "failed"]
    assert dels[1].transient is False and dels[1].error and "empty Event Hubs batch" in dels[1].error
    assert dels[3].transient is False and dels[3].error and "1000000" in dels[3].error
    assert [i for s in ns.sent for i in s.event_ids()] == [small1.eventId, small2.eventId]


async def test_failed_batch_stops_its_key_and_reports_transient() -> None:
    ns = FakeEventHubs(max_message_size=6_000)
    dest = amqp_dest(ns)
    a_events = [make_event("tenant-a", data={"n": n, "pad": "p" * 1_500}) for n in range(8)]
    ns.fail_on_send[2] = ConnectionLostError("link detached")

    dels = await publish_one(dest, a_events, AMQP, stream(topics=["hub"]))

    first = ns.sent[0].event_ids()
    assert first == [e.eventId for e in a_events[: len(first)]]
    assert [d.status for d in dels[: len(first)]] == ["delivered"] * len(first)
    rest = dels[len(first):]
    assert rest and all(d.status == "failed" and d.transient for d in rest)
    assert ns.calls == 2  # nothing sent for the key after the failed batch: a retry keeps the order
    assert "ConnectionLostError" in (rest[0].error or "")


async def test_authentication_error_is_not_transient() -> None:
    ns = FakeEventHubs()
    ns.fail_on_send[1] = AuthenticationError("unauthorized")
    dest = amqp_dest(ns)
    [d] = await publish_one(dest, [make_event()], AMQP, stream(topics=["hub"]))
    assert d.status == "failed" and d.transient is False


async def test_concurrent_chunks_of_one_tenant_keep_their_order() -> None:
    ns = FakeEventHubs()
    ns.send_delay = 0.01
    dest = amqp_dest(ns)
    events = [make_event(data={"n": n}) for n in range(30)]
    chunks = [events[i:i + 10] for i in range(0, 30, 10)]

    results = await asyncio.gather(*(publish_one(dest, c, AMQP, stream(topics=["hub"])) for c in chunks))

    assert all(d.status == "delivered" for r in results for d in r)
    assert [i for s in ns.sent for i in s.event_ids()] == [e.eventId for e in events]
    assert dest._amqp._order == {}  # locks are dropped when unused


async def test_routes_and_gzip_bodies_when_compression_enabled() -> None:
    ns = FakeEventHubs()
    dest = amqp_dest(ns)
    options = KafkaOptions.model_validate({"transport": "amqp", "routes": [
        {"topic": "risks", "eventTypes": ["RISK_CREATED"]}]})
    risk, ctrl = make_event(event_type="RISK_CREATED"), make_event(event_type="CONTROL_TESTED")

    dels = await publish_one(dest, [risk, ctrl], options, stream(topics=["all"], compressionEnabled=True))

    assert [d.status for d in dels] == ["delivered", "delivered"]
    assert dels[0].ref == "all/amqp,risks/amqp"
    got = {(s.hub, i) for s in ns.sent for i in s.event_ids()}
    assert got == {("all", risk.eventId), ("all", ctrl.eventId), ("risks", risk.eventId)}
    for s in ns.sent:
        for ed, body in zip(s.events, s.bodies()):
            assert props(ed)["content-encoding"] == "gzip"
            assert orjson.loads(gzip.decompress(body))["eventId"] == props(ed)["eventId"]


async def test_without_credentials_deliveries_fail_for_good() -> None:
    dest = KafkaDestination(Settings.from_env({"EVENTHUBS_TRANSPORT": "amqp"}))
    [d] = await publish_one(dest, [make_event()], KafkaOptions(), stream())
    assert d.status == "failed" and d.transient is False
    assert d.error and "EVENTHUBS_CONNECTION_STRING" in d.error
    await dest.close()


@pytest.mark.parametrize("env", [
    {"EVENTHUBS_CONNECTION_STRING":
     "Endpoint=sb://grc.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"},
    {"EVENTHUBS_FULLY_QUALIFIED_NAMESPACE": "grc.servicebus.windows.net"},
])
async def test_production_client_factory_builds_the_sdk_client(env: dict[str, str]) -> None:
    sender = EventHubsAmqpSender(Settings.from_env(env))
    client = sender._client("grc-events")  # no network until the first send
    assert isinstance(client, EventHubProducerClient)
    assert client.eventhub_name == "grc-events"
    assert client._address.hostname == "grc.servicebus.windows.net"  # the SDK keeps no public name
    assert (sender._credential is not None) == ("EVENTHUBS_FULLY_QUALIFIED_NAMESPACE" in env)
    await sender.close()
