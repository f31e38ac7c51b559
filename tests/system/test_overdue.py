"""Overdue assessments with offset due dates, through the host's way of running a timer now (item 3)."""
from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

from tests.system.cosmos import Platform, events
from tests.system.harness import ROOT, App, own_stack_and_app, tenant, wait_for


def at(instant: datetime, hours: float) -> str:
    """`instant` written as local time at UTC`hours` (RFC 3339 with that offset; 0 -> Z)."""
    if hours == 0:
        return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return instant.astimezone(timezone(timedelta(hours=hours))).isoformat(timespec="seconds")


def test_overdue_compares_instants_whatever_the_offset(app: App) -> None:
    t = tenant("due")
    platform = Platform(app.env)
    now = datetime.now(UTC)
    past, future = now - timedelta(hours=1), now + timedelta(hours=1)
    due = {  # id -> dueDate; the past ones are overdue, the future ones not, in every zone
        "past-ist": at(past, 5.5), "past-pst": at(past, -8), "past-utc": at(past, 0),
        "future-ist": at(future, 5.5), "future-pst": at(future, -8), "future-utc": at(future, 0),
        # Text order alone gets these two wrong: 5.5 h ahead of UTC reads as later than now, 8 h behind
        # reads as earlier than now.
        "past-ist-4h": at(now - timedelta(hours=4), 5.5), "future-pst-4h": at(now + timedelta(hours=4), -8),
        "done-past": at(past, 5.5),
    }
    for aid, date in due.items():
        platform.create("assessments", {"id": aid, "tenantId": t, "title": aid, "dueDate": date,
                                        "status": "completed" if aid.startswith("done") else "planned"})
    runs = app.log().count("overdue check:")
    app.run_function("assessments_overdue")  # POST /admin/functions/assessments_overdue: 202
    wait_for(lambda: app.log().count("overdue check:") > runs, 60, what="the overdue run finished")
    overdue = [e for e in events(app, t) if e["eventType"] == "ASSESSMENT_OVERDUE"]
    assert sorted(e["entityId"] for e in overdue) == ["past-ist", "past-ist-4h", "past-pst", "past-utc"]
    for e in overdue:
        assert e["data"]["dueDate"] == due[e["entityId"]]
        assert 0.9 <= e["data"]["overdueByHours"] <= 4.2, e["data"]
        assert e["timestamp"].endswith("Z")  # the due instant, normalised to UTC
    # Run again, with the documented local command (`make overdue`): nothing is announced twice.
    runs = app.log().count("overdue check:")
    port = urlparse(app.base).port
    done = subprocess.run(["make", "-s", "overdue", f"PORT={port}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "202", (done.stdout, done.stderr)
    wait_for(lambda: app.log().count("overdue check:") > runs, 60, what="the second overdue run finished")
    assert len([e for e in events(app, t) if e["eventType"] == "ASSESSMENT_OVERDUE"]) == 4


def test_a_missed_check_runs_at_start_on_an_empty_local_cosmos_server(tmp_path: Path) -> None:
    """`make run` after a pause of five minutes or more: the timer's state says an occurrence was missed,
    so the check fires at start (past due), as the host does with useMonitor, on a local Cosmos server
    that starts empty. It ran before the runner had created the monitored containers and failed with
    404 and a long traceback at every such start; now it finds its container."""
    timers = tmp_path / "app" / "devhost-state" / "timers"
    timers.mkdir(parents=True)
    missed = datetime.now(UTC) - timedelta(minutes=10)
    (timers / "assessments_overdue.json").write_text(json.dumps({
        "Last": (missed - timedelta(minutes=5)).isoformat(), "Next": missed.isoformat(),
        "LastUpdated": missed.isoformat()}))
    with own_stack_and_app(tmp_path, ("redis", "azurite", "cosmos")) as (_, app):
        done = "Executed 'Functions.assessments_overdue'"
        wait_for(lambda: done in app.log(), 30, what="the missed check run at start")
        runs = [line for line in app.log().splitlines() if done in line]
        assert runs and all("(Succeeded" in line for line in runs), runs
        assert "CosmosResourceNotFoundError" not in app.log()
