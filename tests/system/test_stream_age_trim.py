"""A tenant's Redis stream is trimmed by age (`retentionHours`, default 6) with one `XTRIM MINID ~` on
the instance's first write for the tenant, then at most once a minute per tenant and instance (README
"Stream config", docs/capacity.md): through the running app, on a Redis of the test's own, so that
Redis' own count of XTRIM calls (INFO commandstats, which counts the commands a script runs) is this
tenant's alone.

Entries "written eight hours ago" are put in the stream first with explicit ids of that time (Redis
takes any id above the stream's last one); the app's first write trims them (approximately: whole
macro-nodes go, so the old entries sharing a node with the new one stay). Writes for the next minute
send no trim; the first write after it sends one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis as redis_client

from tests.system.harness import App, Stack, own_stack_and_app, tenant

AGE_TRIM_SECONDS = 60  # README: "at most once a minute per tenant and instance"
OLD_ENTRIES = 300  # several macro-nodes (at most 100 entries each): a trim takes all but the last


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, App]]:
    work: Path = tmp_path_factory.mktemp("age-trim")
    with own_stack_and_app(work, ("redis", "azurite"), SYSTEM_PERFORMANCE_EVENTS="false") as running:
        yield running


def _xtrims(r: redis_client.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_xtrim", {}).get("calls", 0))


def _post(app: App, t: str, n: int) -> None:
    r = app.post("/events", tenants=[t], json={
        "tenantId": t, "eventType": "RISK_UPDATED", "source": "BACKEND_API", "action": "UPDATE",
        "entityId": f"risk-{n}", "entityType": "risk", "data": {"score": n}})
    assert r.status_code == 201, r.text


def test_old_entries_go_on_the_first_write_then_one_trim_a_minute(own: tuple[Stack, App]) -> None:
    stack, app = own
    t = tenant("trim")
    key = f"grc:{{{t}}}:events"
    r = stack.redis()
    try:
        eight_hours_ago = int(time.time() * 1000) - 8 * 3600 * 1000
        pipe = r.pipeline(transaction=False)
        for i in range(OLD_ENTRIES):
            fields: dict[Any, Any] = {"t": "RISK_UPDATED", "s": "BACKEND_API", "f": "json", "e": "{}"}
            pipe.xadd(key, fields, id=f"{eight_hours_ago + i}-0")
        pipe.execute()
        assert r.xlen(key) == OLD_ENTRIES
        before = _xtrims(r)

        first = time.monotonic()
        _post(app, t, 0)
        assert _xtrims(r) == before + 1
        # The old entries went, but for those in the macro-node the trim stops at (it keeps whole nodes).
        left = r.xlen(key)
        assert 1 <= left <= 101, left

        n = 1
        while time.monotonic() - first < AGE_TRIM_SECONDS - 5:  # a write every second for the minute
            _post(app, t, n)
            n += 1
            time.sleep(1.0)
        assert _xtrims(r) == before + 1, "a second age trim within the minute"
        assert r.xlen(key) == left + n - 1

        time.sleep(max(0.0, AGE_TRIM_SECONDS + 1 - (time.monotonic() - first)))
        _post(app, t, n)
        assert _xtrims(r) == before + 2, "no age trim on the first write after the minute"
        assert r.xlen(key) == left + n  # the old entries left were in the node of the new ones: kept
    finally:
        r.close()
