"""The Kafka destination against the real local broker (tansu): publish, consume back, check.

Reads assign partitions directly (no consumer group join). Each test uses its own topics.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from typing import Any, AsyncIterator, Iterable, Iterator

import orjson
import pytest

from localdev import services
from shared.app.producer import EventProducer
from shared.core.destination_options import KafkaOptions
from shared.core.settings import Settings
from shared.core.streamconfig import StreamConfig, StreamConfigIn
from shared.delivery.pipeline import Pipeline, PublishContext
from shared.destinations.base import Chunk, publish_one
from shared.destinations.kafka import (TOKEN_MIN_LEFT_SECONDS, KafkaConfigError, KafkaDestination, OAuthTokens,
                                      producer_config)
from tests.kafka_helpers import TopicReader, big_event, create_topics, headers, make_event, unique_topic


def kafka_settings(broker: str, **env: str) -> Settings:
    return Settings.from_env({"KAFKA_BROKER": broker, **env})


def stream(tenant: str = "tenant-a", **kw: Any) -> StreamConfig:
    return StreamConfig.model_validate({"tenantId": tenant, "destinations": [{"type": "kafka"}], **kw})


@pytest.fixture
def broker(kafka_broker: services.Running) -> str:
    return kafka_broker.settings["KAFKA_BROKER"]


@pytest.fixture(scope="module")
def reader(kafka_broker: services.Running) -> Iterator[TopicReader]:
    r = TopicReader(kafka_broker.settings["KAFKA_BROKER"])
    yield r
    r.close()


@pytest.fixture(scope="module")
def shared_dest(kafka_broker: services.Running) -> Iterator[KafkaDestination]:
    """One destination for the module, as in an instance: its producers are not bound to a loop."""
    d = KafkaDestination(kafka_settings(kafka_broker.settings["KAFKA_BROKER"]))
    yield d
    asyncio.run(d.close())


@pytest.fixture
def dest(shared_dest: KafkaDestination) -> KafkaDestination:
    return shared_dest


@pytest.fixture
async def fresh_dest(broker: str) -> AsyncIterator[KafkaDestination]:
    """A destination of its own (tests that look at which producers exist), statistics every 100 ms."""
    d = KafkaDestination(kafka_settings(broker, KAFKA_STATS_INTERVAL_MS="100"))
    yield d
    await d.close()


async def test_keys_headers_and_order_per_tenant(
    reader: TopicReader, broker: str, dest: KafkaDestination,
) -> None:
    topic = unique_topic()
    create_topics(broker, topic, partitions=3)
    tenants = ["tenant-a", "tenant-b", "tenant-c"]
    events = [make_event(t, data={"seq": n}) for n in range(20) for t in tenants]  # interleaved
    cfg = stream(topics=[topic])

    # One call carries every tenant's chunks (two per tenant here, as with batchSize 10).
    own = {t: [e for e in events if e.tenantId == t] for t in tenants}
    chunks = [Chunk(cfg.model_copy(update={"tenantId": t}), KafkaOptions(), own[t][half:half + 10])
              for half in (0, 10) for t in tenants]
    out = await dest.publish(chunks)
    results = [out[k] + out[k + 3] for k in range(3)]

    for t, dels in zip(tenants, results):
        assert [d.status for d in dels] == ["delivered"] * 20
        assert all(d.ref and d.ref.startswith(f"{topic}/") for d in dels)
    msgs = reader.read(topic, expect=60)
    assert len(msgs) == 60
    by_key: dict[str, list[str]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    sent = {e.eventId: e for e in events}
    for m in msgs:
        h = headers(m)
        ev = sent[h["eventId"]]
        assert m.key().decode() == ev.tenantId
        assert h["eventType"] == ev.eventType.value
        assert h["tenantId"] == ev.tenantId
        assert h["correlationId"] == ev.correlationId
        assert h["source"] == ev.source.value
        assert h["content-type"] == "application/json"
        assert orjson.loads(m.value()) == ev.to_dict()
        by_key[ev.tenantId].append(ev.eventId)
        partitions[ev.tenantId].add(m.partition())
    for t in tenants:
        assert by_key[t] == [e.eventId for e in events if e.tenantId == t]  # order per key
        assert len(partitions[t]) == 1


async def test_entity_key_falls_back_to_tenant(
    reader: TopicReader, broker: str, dest: KafkaDestination,
) -> None:
    topic = unique_topic()
    create_topics(broker, topic)
    events = [make_event("tenant-a", entity_id="risk-1"), make_event("tenant-a")]
    dels = await publish_one(dest, events, KafkaOptions(key="entityId"), stream(topics=[topic]))
    assert [d.status for d in dels] == ["delivered", "delivered"]
    keys = {headers(m)["eventId"]: m.key().decode() for m in reader.read(topic, expect=2)}
    assert keys == {events[0].eventId: "risk-1", events[1].eventId: "tenant-a"}


async def test_topic_routing_by_event_type_and_source(
    reader: TopicReader, broker: str, dest: KafkaDestination,
) -> None:
    risks, everything, mcp = unique_topic("risks"), unique_topic("all"), unique_topic("mcp")
    create_topics(broker, risks, everything, mcp)
    options = KafkaOptions.model_validate({"routes": [
        {"topic": risks, "eventTypes": ["RISK_CREATED", "RISK_UPDATED"]},
        {"topic": mcp, "sources": ["MCP_SERVER"]},  # only in routes: still a topic
    ]})
    cfg = stream(topics=[risks, everything])
    e_risk = make_event(event_type="RISK_CREATED", source="BACKEND_API")
    e_ctrl = make_event(event_type="CONTROL_TESTED", source="BACKEND_API")
    e_mcp_risk = make_event(event_type="RISK_UPDATED", source="MCP_SERVER")

    dels = await publish_one(dest, [e_risk, e_ctrl, e_mcp_risk], options, cfg)

    assert [d.status for d in dels] == ["delivered"] * 3
    assert dels[2].ref is not None and dels[2].ref.count("@") == 3  # one ack per topic
    got = {t: {headers(m)["eventId"] for m in reader.read(t, expect=n)}
           for t, n in ((risks, 2), (everything, 3), (mcp, 1))}
    assert got[risks] == {e_risk.eventId, e_mcp_risk.eventId}
    assert got[everything] == {e_risk.eventId, e_ctrl.eventId, e_mcp_risk.eventId}
    assert got[mcp] == {e_mcp_risk.eventId}


async def test_unmatched_event_is_not_sent_and_no_topics_means_default_topic(
    reader: TopicReader, broker: str,
) -> None:
    default = unique_topic("default")
    only_risks = unique_topic("risks")
    create_topics(broker, default, only_risks)
    d = KafkaDestination(kafka_settings(broker, KAFKA_DEFAULT_TOPIC=default))
    try:
        ev = make_event(event_type="CONTROL_FAILED")
        routed = KafkaOptions.model_validate({"routes": [{"topic": only_risks, "eventTypes": ["RISK_CREATED"]}]})
        [unrouted] = await publish_one(d, [ev], routed, stream())
        assert unrouted.status == "delivered" and unrouted.ref and unrouted.ref.startswith("unrouted")
        [to_default] = await publish_one(d, [ev], KafkaOptions(), stream())
        assert to_default.status == "delivered" and to_default.ref and to_default.ref.startswith(f"{default}/")
    finally:
        await d.close()
    assert [headers(m)["eventId"] for m in reader.read(default, expect=1)] == [ev.eventId]
    assert reader.read(only_risks, expect=0, timeout=0.5) == []


async def test_a_missing_topic_is_reported_and_never_created_as_event_hubs_would_not(broker: str) -> None:
    """Event Hubs creates no event hub through Kafka: the producers ask the broker for none, so the
    local broker (which would) behaves the same, and the stream-config check finds what is missing."""
    from confluent_kafka import Producer

    missing, present = unique_topic("missing"), unique_topic("present")
    create_topics(broker, present)
    settings = kafka_settings(broker)
    d = KafkaDestination(settings)
    try:
        assert await d.missing_topics([present, missing]) == [missing]
    finally:
        await d.close()
    # The app's producer settings; the wait for a topic to appear shortened from 30 s for the test.
    producer = Producer({**producer_config(settings, gzip=False), "topic.metadata.propagation.max.ms": 1500})
    errors: list[Any] = []
    producer.produce(missing, b"{}", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)
    assert len(errors) == 1 and errors[0] is not None and "UNKNOWN_TOPIC" in errors[0].name(), errors
    assert missing not in producer.list_topics(timeout=5).topics


async def test_event_over_1_000_000_bytes_is_refused_not_sent(
    reader: TopicReader, broker: str, dest: KafkaDestination,
) -> None:
    topic = unique_topic()
    create_topics(broker, topic)
    small, big = make_event(), big_event("tenant-a", 1_000_001)
    assert len(big.to_json()) > 1_000_000

    dels = await publish_one(dest, [small, big], KafkaOptions(), stream(topics=[topic]))

    assert dels[0].status == "delivered"
    assert dels[1].status == "failed" and dels[1].transient is False
    assert dels[1].error and "1000000" in dels[1].error and "bytes" in dels[1].error
    assert [headers(m)["eventId"] for m in reader.read(topic, expect=1)] == [small.eventId]


async def test_event_just_under_the_limit_is_delivered(
    reader: TopicReader, broker: str, dest: KafkaDestination,
) -> None:
    topic = unique_topic()
    create_topics(broker, topic, partitions=1)
    ev = big_event("tenant-a", 999_000)
    assert 999_000 < len(ev.to_json()) <= 1_000_000
    [d] = await publish_one(dest, [ev], KafkaOptions(), stream(topics=[topic]))
    assert d.status == "delivered", d.error
    [m] = reader.read(topic, expect=1)
    assert len(m.value()) == len(ev.to_json())


async def test_cloudevents_binary_mode(reader: TopicReader, broker: str, dest: KafkaDestination) -> None:
    topic = unique_topic()
    create_topics(broker, topic)
    ev = make_event(entity_id="risk-9", data={"score": 7})
    [d] = await publish_one(dest, [ev], KafkaOptions(format="cloudevents"), stream(topics=[topic]))
    assert d.status == "delivered"
    [m] = reader.read(topic, expect=1)
    h = headers(m)
    assert h["ce_specversion"] == "1.0"
    assert h["ce_id"] == ev.eventId == h["eventId"]
    assert h["ce_type"] == "com.grc.RISK_CREATED"
    assert h["ce_source"] == "/tenants/tenant-a/sources/BACKEND_API"
    assert h["ce_subject"] == "risk/risk-9"
    assert h["ce_tenantid"] == "tenant-a" and h["ce_correlationid"] == ev.correlationId
    assert h["content-type"] == "application/json"
    assert orjson.loads(m.value())["data"] == {"score": 7}


async def _fresh_stats(dest: KafkaDestination, mode: str, after: float) -> dict[str, Any]:
    for _ in range(100):  # statistics come every 100 ms here
        s = dest.pending()["producers"].get(mode, {})
        p = dest._producers[mode]
        if p.stats.get("at", 0) > after and s.get("messages") == 0:
            return p.stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"no statistics from the {mode} producer")


async def test_gzip_producer_when_compression_enabled(
    reader: TopicReader, broker: str, fresh_dest: KafkaDestination,
) -> None:
    dest = fresh_dest
    topic = unique_topic()
    create_topics(broker, topic)
    data = {"text": "compliance " * 2000}  # ~22 KB, very compressible
    plain_events = [make_event(data=data) for _ in range(20)]
    gz_events = [make_event("tenant-z", data=data) for _ in range(20)]

    plain, gz = await dest.publish([  # one call; the two compression modes go to their own producers
        Chunk(stream(topics=[topic]), KafkaOptions(), plain_events),
        Chunk(stream("tenant-z", topics=[topic], compressionEnabled=True), KafkaOptions(), gz_events)])
    dels = plain + gz
    assert all(d.status == "delivered" for d in dels)
    done = time.time()

    assert set(dest._producers) == {"none", "gzip"}
    assert dest._producers["gzip"].conf["compression.type"] == "gzip"
    assert dest._producers["none"].conf["compression.type"] == "none"
    plain_stats = await _fresh_stats(dest, "none", done)
    gz_stats = await _fresh_stats(dest, "gzip", done)
    payload = sum(len(e.to_json()) for e in gz_events)
    assert plain_stats["tx_bytes"] > payload  # sent as is
    assert gz_stats["tx_bytes"] < payload / 10  # gzip on the wire
    # Consumers see the same bytes either way (decompression is transparent).
    values = {headers(m)["eventId"]: m.value() for m in reader.read(topic, expect=40)}
    assert all(values[e.eventId] == e.to_json() for e in gz_events + plain_events)


async def test_broker_down_gives_failed_transient_deliveries() -> None:
    closed = f"127.0.0.1:{services.free_port()}"
    d = KafkaDestination(kafka_settings(closed, KAFKA_DELIVERY_TIMEOUT_MS="1000", HEALTH_TIMEOUT_SECONDS="0.5"))
    try:
        events = [make_event() for _ in range(3)]
        dels = await publish_one(d, events, KafkaOptions(), stream(topics=["nowhere"]))
        assert [(x.status, x.transient) for x in dels] == [("failed", True)] * 3
        assert all(x.error and "nowhere" in x.error and "TIMED_OUT" in x.error for x in dels)
        health = await d.health()
        assert health.status == "unhealthy"
    finally:
        await d.close()


async def test_no_report_within_the_bounded_wait_is_a_transient_failure() -> None:
    closed = f"127.0.0.1:{services.free_port()}"
    d = KafkaDestination(kafka_settings(closed, KAFKA_DELIVERY_TIMEOUT_MS="60000"))
    d._wait_seconds = 0.3  # librdkafka would still be retrying: the call must not wait for it
    try:
        [x] = await publish_one(d, [make_event()], KafkaOptions(), stream(topics=["t"]))
        assert x.status == "failed" and x.transient is True
        assert x.error and "no delivery report" in x.error
        assert d.pending()["messages"] == 1  # still queued in the producer
    finally:
        await d.close()


async def test_health_reports_latency_and_pending(broker: str, dest: KafkaDestination) -> None:
    topic = unique_topic()
    create_topics(broker, topic)
    await publish_one(dest, [make_event()], KafkaOptions(), stream(topics=[topic]))
    h = await dest.health()
    assert h.status == "healthy"
    assert h.latency_ms is not None and h.latency_ms >= 0
    assert h.info["brokers"] >= 1 and h.info["pendingMessages"] == 0
    assert dest.pending()["messages"] == 0


def test_producer_config_follows_event_hubs_rules() -> None:
    conf = producer_config(kafka_settings("127.0.0.1:9092"), gzip=False)
    assert conf["request.timeout.ms"] >= 60_000
    assert conf["metadata.max.age.ms"] == 180_000
    assert conf["connections.max.idle.ms"] < 240_000
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["compression.type"] in ("none", "gzip")
    assert conf["message.max.bytes"] < 1_046_528
    assert conf["security.protocol"] == "PLAINTEXT"
    assert producer_config(kafka_settings("x:9092"), gzip=True)["compression.type"] == "gzip"


def test_producer_linger_is_the_setting() -> None:
    assert producer_config(kafka_settings("x:9092"), gzip=False)["linger.ms"] == 1  # the default
    assert producer_config(kafka_settings("x:9092", KAFKA_LINGER_MS="20"), gzip=False)["linger.ms"] == 20


def test_event_hubs_connection_string_config_keeps_the_secret_out_of_sight() -> None:
    secret = "Endpoint=sb://grc.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"
    s = kafka_settings("grc.servicebus.windows.net:9093", KAFKA_SECURITY="sasl-plain",
                       EVENTHUBS_CONNECTION_STRING=secret)
    conf = producer_config(s, gzip=False)
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanisms"] == "PLAIN"
    assert conf["sasl.username"] == "$ConnectionString" and conf["sasl.password"] == secret
    assert secret not in repr(s)
    with pytest.raises(KafkaConfigError, match="EVENTHUBS_CONNECTION_STRING"):
        producer_config(kafka_settings("x:9093", KAFKA_SECURITY="sasl-plain"), gzip=False)


class FakeEntraCredential:
    """Stands in for azure-identity (no Entra ID here): records the scopes it was asked for."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str) -> Any:
        self.scopes.extend(scopes)
        return type("AccessToken", (), {"token": "tok-123", "expires_on": 2_000_000_000})()


def test_oauth_config_gets_a_token_for_the_namespace_scope() -> None:
    cred = FakeEntraCredential()
    s = kafka_settings("grc.servicebus.windows.net:9093", KAFKA_SECURITY="oauth")
    conf = producer_config(s, gzip=False, credential_factory=lambda: cred)
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanisms"] == "OAUTHBEARER"
    assert conf["oauth_cb"]("") == ("tok-123", 2_000_000_000.0)
    assert cred.scopes == ["https://grc.servicebus.windows.net/.default"]


def wait_until(probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class SlowFakeEntraCredential:
    """Stands in for azure-identity (no Entra ID here): each token lives `life` seconds; a fetch
    waits for `gate` (set by the test) as a call to the managed identity endpoint would take time."""

    def __init__(self, life: float) -> None:
        self.life = life
        self.fetches = 0
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def get_token(self, *scopes: str) -> Any:
        self.gate.wait(10)
        self.fetches += 1
        if self.fail:
            raise RuntimeError("endpoint down")
        return type("AccessToken", (), {"token": f"tok-{self.fetches}", "expires_on": int(time.time() + self.life)})()


def test_oauth_tokens_never_make_a_caller_wait_while_one_is_cached() -> None:
    """librdkafka may ask from the event loop's thread: with a valid token cached the answer is
    immediate and the next token is fetched on another thread."""
    cred = SlowFakeEntraCredential(life=3600)
    tokens = OAuthTokens(cred, "https://grc.servicebus.windows.net/.default")
    assert tokens("")[0] == "tok-1"  # the first call has nothing cached: it fetches
    cred.gate.clear()  # fetches now hang until the test lets them through
    t0 = time.monotonic()
    assert tokens("")[0] == "tok-1"  # cached and valid: returned at once, a refresh started
    assert tokens("")[0] == "tok-1"
    assert time.monotonic() - t0 < 0.5
    cred.gate.set()
    wait_until(lambda: tokens("")[0] == "tok-2", 5)
    assert cred.fetches <= 3  # one refresh at a time, not one per call


def test_oauth_tokens_fetch_in_the_call_when_the_cached_one_runs_out() -> None:
    cred = SlowFakeEntraCredential(life=TOKEN_MIN_LEFT_SECONDS - 1)  # never good enough to hand out
    tokens = OAuthTokens(cred, "https://grc.servicebus.windows.net/.default")
    assert [tokens("")[0] for _ in range(3)] == ["tok-1", "tok-2", "tok-3"]


def test_a_failed_refresh_keeps_the_cached_token() -> None:
    cred = SlowFakeEntraCredential(life=3600)
    tokens = OAuthTokens(cred, "https://grc.servicebus.windows.net/.default")
    tokens("")
    cred.fail = True
    assert tokens("")[0] == "tok-1"
    wait_until(lambda: cred.fetches >= 2, 5)
    assert tokens("")[0] == "tok-1"


async def test_misconfigured_security_fails_deliveries_without_raising() -> None:
    d = KafkaDestination(kafka_settings("x:9093", KAFKA_SECURITY="sasl-plain"))
    dels = await publish_one(d, [make_event()], KafkaOptions(), stream())
    assert dels[0].status == "failed" and dels[0].transient is False
    assert dels[0].error and "EVENTHUBS_CONNECTION_STRING" in dels[0].error
    await d.close()


# ---- through the pipeline --------------------------------------------------------------

class _Configs:
    def __init__(self, configs: Iterable[StreamConfig]) -> None:
        self.configs = {c.tenantId: c for c in configs}

    async def get_many(self, tenant_ids: Iterable[str]) -> dict[str, StreamConfig]:
        return {t: self.configs.get(t) or StreamConfig.default(t) for t in tenant_ids}


async def test_pipeline_routes_tenant_events_to_kafka(
    reader: TopicReader, broker: str, fresh_dest: KafkaDestination,
) -> None:
    dest = fresh_dest
    topic = unique_topic()
    create_topics(broker, topic)
    cfg = StreamConfig.model_validate({
        "tenantId": "tenant-p", "topics": [topic], "batchSize": 7, "compressionEnabled": True,
        "filters": [{"eventTypes": ["RISK_CREATED"]}],
        "destinations": [{"type": "kafka", "config": {"key": "entityId"}}],
    })
    pipeline = Pipeline(_Configs([cfg]), {"kafka": dest})
    raw = [{"tenantId": "tenant-p", "eventType": et, "source": "ARCHER_GRC", "action": "CREATE",
            "entityId": f"r-{n % 3}", "data": {"n": n}}
           for n, et in enumerate(["RISK_CREATED"] * 20 + ["CONTROL_TESTED"] * 2)]

    results = await pipeline.publish_raw(raw, PublishContext(correlation_id="corr-1"))

    assert [r.status for r in results] == ["accepted"] * 20 + ["filtered"] * 2
    assert all(r.destinations[0].status == "delivered" for r in results[:20])
    msgs = reader.read(topic, expect=20)
    assert len(msgs) == 20
    by_key: dict[str, list[int]] = defaultdict(list)
    for m in msgs:
        assert headers(m)["correlationId"] == "corr-1"
        by_key[m.key().decode()].append(orjson.loads(m.value())["data"]["n"])
    assert by_key == {f"r-{k}": [n for n in range(20) if n % 3 == k] for k in range(3)}
    assert "gzip" in dest._producers and "none" not in dest._producers



async def test_event_producer_with_a_stored_kafka_stream_config(
    reader: TopicReader, broker: str, redis_port: int, storage_connection_string: str,
) -> None:
    """The whole producer: config in Azurite, metrics in Redis, the destination from DESTINATION_FACTORIES."""
    topic = unique_topic()
    create_topics(broker, topic)
    settings = Settings.from_env({"KAFKA_BROKER": broker, "REDIS_PORT": str(redis_port),
                                  "STORAGE_CONNECTION_STRING": storage_connection_string,
                                  "STREAM_CONFIG_TABLE": f"cfg{uuid.uuid4().hex[:8]}"})
    async with EventProducer.from_settings(settings) as producer:
        await producer.services.configs.write("tenant-e", StreamConfigIn.model_validate({
            "topics": [topic], "destinations": [{"type": "kafka", "config": {"format": "cloudevents"}}]}))
        results = await producer.publish_bulk(
            [{"tenantId": "tenant-e", "eventType": "POLICY_VIOLATION", "source": "MCP_SERVER",
              "action": "DETECT", "data": {"n": n}} for n in range(5)], correlation_id="corr-e")
        assert [r.status for r in results] == ["accepted"] * 5
        assert [r.destinations[0].destination for r in results] == ["kafka"] * 5
        assert isinstance(producer.services.destinations.get("kafka"), KafkaDestination)
    msgs = reader.read(topic, expect=5)
    assert [headers(m)["eventId"] for m in msgs] == [r.eventId for r in results]
    assert all(headers(m)["ce_type"] == "com.grc.POLICY_VIOLATION" for m in msgs)
    assert [orjson.loads(m.value())["data"]["n"] for m in msgs] == list(range(5))


async def _concurrent_publishes(dest: KafkaDestination, topic: str, calls: int, per_call: int) -> tuple[
        list[Any], list[Any]]:
    """`calls` publish calls in flight at once on one loop, events of three tenants; (events, deliveries)."""
    tenants = ["tenant-a", "tenant-b", "tenant-c"]
    batches = [[make_event(tenants[(c + n) % 3], data={"call": c, "n": n}) for n in range(per_call)]
               for c in range(calls)]
    cfg = stream(topics=[topic])
    results = await asyncio.gather(*(publish_one(dest, b, KafkaOptions(), cfg) for b in batches))
    return [e for b in batches for e in b], [d for r in results for d in r]


def _assert_each_ref_is_its_own_record(
    reader: TopicReader, topic: str, events: list[Any], dels: list[Any],
) -> None:
    """Every delivery is `topic/partition@offset` of the record carrying its own event."""
    assert [d.status for d in dels] == ["delivered"] * len(events)
    at = {f"{topic}/{m.partition()}@{m.offset()}": headers(m)["eventId"]
          for m in reader.read(topic, expect=len(events))}
    assert [at.get(d.ref or "") for d in dels] == [e.eventId for e in events]


async def test_concurrent_calls_each_get_the_refs_of_their_own_records(
    reader: TopicReader, broker: str, dest: KafkaDestination,
) -> None:
    topic = unique_topic()
    create_topics(broker, topic, partitions=3)
    events, dels = await _concurrent_publishes(dest, topic, calls=12, per_call=40)
    _assert_each_ref_is_its_own_record(reader, topic, events, dels)


async def _groups_on_a_destination_of_its_own(
    broker: str, reader: TopicReader, monkeypatch: pytest.MonkeyPatch, timing: dict[str, float],
    groups: int, calls: int, per_call: int,
) -> None:
    """`groups` of `calls` concurrent calls, one group after another, on a destination of its own whose
    module timing constants are set to `timing`; then every ref is read back. A call whose reports
    nobody serves fails at the bounded wait (20 s)."""
    import shared.destinations.kafka as kafka_module

    for name, value in timing.items():
        monkeypatch.setattr(kafka_module, name, value)
    topic = unique_topic()
    create_topics(broker, topic, partitions=3)
    d = KafkaDestination(kafka_settings(broker))
    d._wait_seconds = 20.0
    try:
        events, dels = [], []
        for _ in range(groups):
            e, x = await _concurrent_publishes(d, topic, calls=calls, per_call=per_call)
            events += e
            dels += x
        _assert_each_ref_is_its_own_record(reader, topic, events, dels)
    finally:
        await d.close()


async def test_reports_are_served_on_the_loop_while_calls_wait(
    reader: TopicReader, broker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The poll thread's fallback made too slow to matter: the loop's own serving delivers every
    overlapping call (the poll thread sits in its fallback wait once calls overlap)."""
    await _groups_on_a_destination_of_its_own(broker, reader, monkeypatch, {"FALLBACK_SECONDS": 3600.0},
                                              groups=4, calls=3, per_call=20)


async def test_the_poll_thread_delivers_reports_when_the_loop_does_not_serve(
    reader: TopicReader, broker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No tick (the loop serves only right after producing): the poll thread's fallback delivers."""
    await _groups_on_a_destination_of_its_own(broker, reader, monkeypatch, {"TICK_SECONDS": 3600.0},
                                              groups=1, calls=4, per_call=25)


async def test_a_lone_call_is_served_by_the_poll_thread_at_once(
    reader: TopicReader, broker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One call waiting (the loop is likely idle): the poll thread serves its reports as they come,
    without the loop's tick (which would add up to a millisecond to every lone request)."""
    await _groups_on_a_destination_of_its_own(
        broker, reader, monkeypatch, {"TICK_SECONDS": 3600.0, "FALLBACK_SECONDS": 3600.0},
        groups=5, calls=1, per_call=10)
