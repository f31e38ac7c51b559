"""ns per call of the telemetry hooks: no-op (no connection string) vs configured.

    python bench/telemetry_overhead.py

The configured exporter points at a closed local port with a 1 h export interval, so this measures
the caller-side cost only (what the pipeline pays); export happens on background threads.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] = "true"

from shared.core.settings import Settings  # noqa: E402
from shared.observability import telemetry  # noqa: E402
from shared.observability.telemetry import BatchTelemetryBuilder, SystemStats  # noqa: E402

CONN = "InstrumentationKey=11111111-2222-3333-4444-555555555555;IngestionEndpoint=http://127.0.0.1:9"


def _batch() -> telemetry.BatchTelemetry:
    b = BatchTelemetryBuilder()
    for i in range(100):  # a 100-event batch over 3 tenants, 2 types, 2 destinations
        t = f"tenant-{i % 3}"
        b.accepted(t, "RISK_UPDATED" if i % 2 else "RISK_CREATED", "COSMOS_DB")
        b.delivered(t, "redis").delivered(t, "kafka").latency(t, 12.5 + i)
    return b.build()


def _pipeline_batch() -> object:
    from shared.observability.tenant_metrics import BatchStats as PipelineStats

    ps = PipelineStats()
    for i in range(100):  # what shared.delivery.pipeline records for the same batch
        ts = ps.tenant(f"tenant-{i % 3}")
        ts.count("acc"), ts.count("t:RISK_UPDATED" if i % 2 else "t:RISK_CREATED"), ts.count("s:COSMOS_DB")
        ts.count("d:redis:ok"), ts.count("d:kafka:ok"), ts.observe_latency(12.5 + i)
    return ps


def measure(tel: telemetry.Telemetry, label: str) -> None:
    stats = _batch()
    pstats = _pipeline_batch()
    sysstats = SystemStats(memory_percent=55.0, destinations_healthy={"redis": True})
    logging.getLogger("grc").setLevel(logging.WARNING)
    cases = {
        "on_batch(100-event batch)": lambda: tel.on_batch(stats),
        "pipeline_hook(100-event batch)": lambda: tel.pipeline_hook(pstats, ()),
        "on_system": lambda: tel.on_system(sysstats),
        "log_event below LOG_LEVEL": lambda: tel.log_event(logging.INFO, "x", tenantId="t"),
    }
    for name, fn in cases.items():
        n = 20_000
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e9
        print(f"{label:10s} {name:32s} {best:10.0f} ns/call")


def main() -> None:
    measure(telemetry.configure(Settings()), "no-op")
    with tempfile.TemporaryDirectory() as tmp:
        tel = telemetry.configure(Settings(APPLICATIONINSIGHTS_CONNECTION_STRING=CONN),
                                  export_interval=3600, enable_local_storage=False, storage_path=tmp)
        measure(tel, "configured")
        tel._agg.drain()  # type: ignore[attr-defined]  # nothing to send to the closed port
        telemetry.configure(Settings())
    n = 20_000
    per_event = min(timeit.repeat(lambda: BatchTelemetryBuilder().accepted("t", "X", "S").delivered("t", "d")
                                  .latency("t", 1.0), number=n, repeat=5)) / n * 1e9
    print(f"{'builder':10s} {'3 increments + new builder':32s} {per_event:10.0f} ns/call")


if __name__ == "__main__":
    main()
