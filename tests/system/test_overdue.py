"""Overdue assessments with offset due dates, through the host's way of running a timer now (item 3)."""
from __future__ import annotations

import json
import re
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


def overdue_summary(app: App) -> dict[str, int]:
    """Run the check through the host's admin API and read the figures of its summary line."""
    runs = app.log().count("overdue check:")
    app.run_function("assessments_overdue")
    wait_for(lambda: app.log().count("overdue check:") > runs, 60, what="the overdue run finished")
    line = [x for x in app.log().splitlines() if "overdue check:" in x][-1]
    found = re.search(r"(\d+) scanned, (\d+) overdue, (\d+) published, (\d+) already sent", line)
    assert found, line
    return dict(zip(("scanned", "overdue", "published", "already"), map(int, found.groups())))


def test_a_run_reads_the_open_assessments_not_every_one_ever_due(app: App) -> None:
    """The check runs every five minutes. It read every assessment whose due date had passed, so a
    container's years of completed and deleted assessments were read (and charged in RU) every run; and
    one overdue for longer than the claims are kept (CHANGEFEED_STATE_TTL_DAYS, 400 days) was announced
    again. A run reads the open ones due within that window, and decides the odd ones in code."""
    t = tenant("due-scan")
    platform = Platform(app.env)
    now = datetime.now(UTC)
    past = at(now - timedelta(days=3), 0)
    before = overdue_summary(app)["scanned"]
    closed = 0
    for i, status in enumerate(["completed", "Completed", " DONE ", "closed", "complete"] * 12):
        platform.create("assessments", {"id": f"done-{i}", "tenantId": t, "dueDate": past, "status": status})
        closed += 1
    for i in range(20):  # soft-deleted, and completed without a status
        platform.create("assessments", {"id": f"deleted-{i}", "tenantId": t, "dueDate": past,
                                        "status": "planned", "isDeleted": True, "ttl": 3600})
        platform.create("assessments", {"id": f"finished-{i}", "tenantId": t, "dueDate": past,
                                        "completedAt": past})
        closed += 2
    for i in range(10):  # announced when they became overdue, more than 400 days ago (the query's
        # text bound keeps a margin of two days for offsets: those are read, and left out in code)
        platform.create("assessments", {"id": f"old-{i}", "tenantId": t, "status": "in_progress",
                                        "dueDate": (now - timedelta(days=405 + i)).date().isoformat()})
        closed += 1
    open_ = {  # read; the last two are decided in code (a status of another type means: by completedAt;
        # the change feed parks such a document, the overdue check reads what is stored)
        "open-planned": {"status": "planned"}, "open-started": {"status": "In_Progress"},
        "open-no-status": {}, "odd-status-open": {"status": 3},
        "odd-status-finished": {"status": 3, "completedAt": past},
    }
    for aid, fields in open_.items():
        platform.create("assessments", {"id": aid, "tenantId": t, "dueDate": past, **fields})
    after = overdue_summary(app)
    assert after["scanned"] - before == len(open_), (before, after, closed)
    overdue = [e for e in events(app, t) if e["eventType"] == "ASSESSMENT_OVERDUE"]
    assert sorted(e["entityId"] for e in overdue) == ["odd-status-open", "open-no-status", "open-planned",
                                                      "open-started"]
    assert {e["data"]["dueDate"] for e in overdue} == {past}


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
