"""bench/profile_runner.py's attribution of py-spy samples to stages (docs/performance.md)."""
from __future__ import annotations

from pathlib import Path

from bench.profile_runner import LOOP, stage_of, stages

ROOT = ["_run_module_as_main (<frozen runpy>:198)", "main (devhost/runner.py:127)",
        "BaseEventLoop._run_once (asyncio/base_events.py:1922)", "Handle._run (asyncio/events.py:80)"]
HANDLER = ["RequestHandler._handle_request (aiohttp/web_protocol.py:602)",
           "handle (shared/http/adapter.py:84)", "publish_bulk (shared/api/events.py:94)",
           "Pipeline.publish_raw (shared/delivery/pipeline.py:123)"]


def test_the_deepest_frame_of_a_stage_wins() -> None:
    validation = [*ROOT, *HANDLER, "BaseModel.model_validate (pydantic/main.py:596)"]
    assert stage_of(validation).startswith("validation")
    # orjson has no Python frame: the result body that called it is the stage
    body = [*ROOT, *HANDLER[:3], "result_body (shared/api/events.py:39)"]
    assert stage_of(body) == "results + response body"


def test_redis_client_frames_count_toward_the_stage_that_made_the_call() -> None:
    append = [*ROOT, *HANDLER, "Pipeline._route_new (shared/delivery/pipeline.py:291)",
              "RedisStreamsDestination.publish (shared/destinations/redis_streams.py:119)",
              "run_script (shared/storage/redisconn.py:90)", "_round_trip (shared/storage/redisconn.py:232)",
              "_SelectorSocketTransport.write (asyncio/selector_events.py:1057)"]
    assert stage_of(append).startswith("Redis destination")
    metrics = [*ROOT, "TenantMetrics.flush (shared/observability/tenant_metrics.py:250)",
               "pipelined (shared/storage/redisconn.py:127)"]
    assert stage_of(metrics).startswith("metrics")
    # a round trip shared by small calls runs in its own task: no caller above it
    shared = [*ROOT, "_SharedTrips._trip (shared/storage/redisconn.py:190)",
              "_send (shared/storage/redisconn.py:135)"]
    assert stage_of(shared).startswith("Redis socket writes")


def test_the_event_loop_only_when_no_stage_claims_the_sample() -> None:
    assert stage_of([*ROOT, "EpollSelector.select (selectors.py:468)"]) == LOOP
    assert stage_of([]).startswith("other")
    # the runner's own main() at the root is not the request adapter
    assert stage_of(["main (devhost/runner.py:127)"]).startswith("other")


def test_stages_counts_py_spy_raw_lines(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(";".join([*ROOT, *HANDLER, "enrich (shared/core/enrich.py:20)"]) + " 7\n"
                   + ";".join([*ROOT, "EpollSelector.select (selectors.py:468)"]) + " 3\n")
    counts, total = stages(raw)
    assert total == 10
    assert counts["enrichment (ids, timestamps, the Event)"] == 7 and counts[LOOP] == 3
