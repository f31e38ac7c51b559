"""Events/s through the Kafka destination vs raw confluent-kafka produce of the same records.

    python -m bench.kafka_destination [--events 50000] [--batch 100] [--tenants 10] [--rounds 3] [--gzip]

Starts a tansu broker on a free port. Both sides send the same pre-built records (value, key,
headers) with the same producer settings; "raw" is produce() in a loop, then flush(); the
destination side is publish() in chunks of --batch events, each awaited until its delivery
reports are in (as the pipeline does), with --concurrency chunks in flight. Rounds alternate the
two sides; prints the median rates and their ratio, and each side's CPU per event: this process
(Python and librdkafka's threads) and the broker's, with the load average before and after (the
machine is shared: the CPU per event moves much less with other work than the rates do).

Run standalone, it first applies the service process's garbage-collector settings
(`shared.app.gc_tuning.tune_for_throughput`, which function_app.py calls at import and
`python -m bench` calls first): the destination runs with them in the service, and without them
CPython's default young-generation threshold collects every few dozen events of a batch.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.cpu import Meter, SideBySide, load  # noqa: E402
from localdev import services  # noqa: E402
from shared.core.destination_options import KafkaOptions  # noqa: E402
from shared.core.enrich import enrich, now_iso  # noqa: E402
from shared.core.events import Event, EventIn  # noqa: E402
from shared.app.gc_tuning import tune_for_throughput  # noqa: E402
from shared.core.settings import Settings  # noqa: E402
from shared.core.streamconfig import StreamConfig  # noqa: E402
from shared.destinations.base import publish_one  # noqa: E402
from shared.destinations.event_records import Record, plan_records  # noqa: E402
from shared.destinations.kafka import KafkaDestination, producer_config  # noqa: E402


def build_events(n: int, tenants: int) -> list[Event]:
    at = now_iso()
    return [enrich(EventIn.model_validate({
        "tenantId": f"tenant-{i % tenants:03d}", "eventType": "RISK_UPDATED", "source": "BACKEND_API",
        "action": "UPDATE", "entityId": f"risk-{i}", "entityType": "risk",
        "data": {"score": i % 25, "owner": "alice@example.com", "title": f"Risk {i}", "controls": ["c1", "c2"]},
    }), ingested_at=at) for i in range(n)]


def raw_rate(settings: Settings, topic: str, events: list[Event], gzip: bool, meter: Meter | None = None) -> float:
    cfg = StreamConfig(tenantId="tenant-000", topics=[topic], compressionEnabled=gzip)
    records = plan_records(events, KafkaOptions(), cfg, topic).records
    producer = Producer(producer_config(settings, gzip=gzip))
    producer.produce(topic, b"warm-up"); producer.flush(10)
    meter = meter or Meter()
    with meter:
        _produce_all(producer, records)
    producer.close()
    return len(records) / meter.wall


def _produce_all(producer: Producer, records: list[Record]) -> None:
    for r in records:
        while True:
            try:
                producer.produce(r.topic, r.value, r.key, headers=r.headers)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} messages undelivered"


async def destination_rate(settings: Settings, topic: str, events: list[Event], batch: int,
                           concurrency: int, gzip: bool, meter: Meter | None = None) -> float:
    dest = KafkaDestination(settings)
    cfg = StreamConfig(tenantId="tenant-000", topics=[topic], compressionEnabled=gzip,
                       destinations=[{"type": "kafka"}])  # type: ignore[list-item]
    options = KafkaOptions()
    await publish_one(dest, events[:1], options, cfg)  # warm-up: producer id, metadata
    chunks = [events[i:i + batch] for i in range(0, len(events), batch)]
    sem = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(chunk: list[Event]) -> None:
        nonlocal failed
        async with sem:
            dels = await publish_one(dest, chunk, options, cfg)
            failed += sum(d.status != "delivered" for d in dels)

    meter = meter or Meter()
    with meter:
        await asyncio.gather(*(one(c) for c in chunks))
    await dest.close()
    assert failed == 0, f"{failed} failed deliveries"
    return len(events) / meter.wall


@dataclass
class KafkaFigures(SideBySide):
    events: int
    size: float
    load: str
    raw_cpu: tuple[float, float] = (0.0, 0.0)  # (this process, broker) CPU seconds over all rounds
    our_cpu: tuple[float, float] = (0.0, 0.0)
    load_before: str = ""

    def _per_event(self, cpu: tuple[float, float]) -> str:
        per = self.events * len(self.raw_rates) / 1e6
        return f"{cpu[0] / per:.1f} us CPU/event in process + {cpu[1] / per:.1f} broker"

    def lines(self) -> list[str]:
        return [*self.rate_lines("raw confluent-kafka produce+flush", "KafkaDestination.publish"),
                f"CPU per event: raw {self._per_event(self.raw_cpu)}; destination {self._per_event(self.our_cpu)}",
                f"ratio destination/raw:             {self.ratio:.2f} ({self.events} events of {self.size:.0f} B; "
                f"load {self.load_before} -> {self.load})"]


def run(events_n: int = 50_000, batch: int = 100, concurrency: int = 8, tenants: int = 10,
        gzip: bool = False, rounds: int = 3) -> KafkaFigures:
    before = load()
    events = build_events(events_n, tenants)
    size = sum(len(e.to_json()) for e in events) / len(events)
    raw_cpu = dest_cpu = (0.0, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        broker = services.start("kafka", Path(tmp))
        try:
            settings = Settings.from_env({"KAFKA_BROKER": broker.settings["KAFKA_BROKER"],
                                          "KAFKA_STATS_INTERVAL_MS": "0"})
            # As event hubs are provisioned: the producers create no topic (allow.auto.create.topics off).
            services.create_topics(settings.kafka_broker, "bench-raw", "bench-dest")
            raw, dest = [], []
            for _ in range(rounds):  # alternating, so machine noise hits both sides
                m = Meter([broker.proc.pid])
                raw.append(raw_rate(settings, "bench-raw", events, gzip, m))
                raw_cpu = (raw_cpu[0] + m.own, raw_cpu[1] + m.other)
                m = Meter([broker.proc.pid])
                dest.append(asyncio.run(destination_rate(settings, "bench-dest", events, batch, concurrency, gzip, m)))
                dest_cpu = (dest_cpu[0] + m.own, dest_cpu[1] + m.other)
        finally:
            services.stop(broker.proc)
    return KafkaFigures(raw, dest, events_n, size, load(), raw_cpu, dest_cpu, before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--gzip", action="store_true")
    args = ap.parse_args()
    tune_for_throughput()  # the service process's settings (function_app.py applies them at import)
    print(f"events: {args.events}, batch {args.batch}, concurrency {args.concurrency}, gzip {args.gzip}")
    print("\n".join(run(args.events, args.batch, args.concurrency, args.tenants, args.gzip, args.rounds).lines()))


if __name__ == "__main__":
    main()
