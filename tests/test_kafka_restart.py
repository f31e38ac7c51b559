"""The Kafka destination recovers when the broker restarts and forgets its idempotent producer.

A restarted tansu (in memory) no longer knows the producer id: the old producer's messages time out
or are refused with UNKNOWN_PRODUCER_ID. Both are transient, and the destination starts a new
producer, so the next attempt is delivered (what the pipeline's in-process retry does).
"""
from __future__ import annotations

import time
from pathlib import Path

from localdev import services
from shared.core.destination_options import KafkaOptions
from shared.core.settings import Settings
from shared.core.streamconfig import StreamConfig
from shared.destinations.base import publish_one
from shared.destinations.kafka import KafkaDestination
from tests.kafka_helpers import create_topics, make_event, unique_topic


async def test_a_new_producer_after_the_broker_forgot_the_old_one(tmp_path: Path) -> None:
    broker_proc = services.start("kafka", tmp_path / "kafka")
    broker = broker_proc.settings["KAFKA_BROKER"]
    topic = unique_topic("restart")
    create_topics(broker, topic, partitions=1)
    dest = KafkaDestination(Settings.from_env({"KAFKA_BROKER": broker, "KAFKA_DELIVERY_TIMEOUT_MS": "1500"}))
    cfg = StreamConfig.model_validate({"tenantId": "tenant-r", "topics": [topic], "destinations": [{"type": "kafka"}]})
    try:
        [d] = await publish_one(dest, [make_event("tenant-r")], KafkaOptions(), cfg)
        assert d.status == "delivered"
        services.stop(broker_proc.proc, timeout=2)
        broker_proc = services.start("kafka", tmp_path / "kafka", broker_proc.ports)
        create_topics(broker, topic, partitions=1)
        outcomes = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            [d] = await publish_one(dest, [make_event("tenant-r")], KafkaOptions(), cfg)
            outcomes.append((d.status, d.transient, d.error))
            if d.status == "delivered":
                break
        assert outcomes[-1][0] == "delivered", outcomes
        assert len(outcomes) <= 2, outcomes  # at most one failed attempt, and that one transient
        assert all(transient for status, transient, _ in outcomes if status == "failed"), outcomes
    finally:
        await dest.close()
        services.stop(broker_proc.proc, timeout=2)
