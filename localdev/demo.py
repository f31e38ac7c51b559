"""Seed a realistic GRC data set into the local Cosmos server and watch events flow.

    make run                      # one terminal: the services and the local runner
    python -m localdev.demo       # another: seeds three tenants in phases, then prints a summary

The runner's Cosmos triggers pick up every write from the change feed; between phases the demo
waits so the runner sees each version (the latest-version feed coalesces writes it has not read
yet). Then it runs the overdue-assessment check once (what the timer does every 5 minutes) and
shows `GET /events/{tenantId}` and `GET /metrics/{tenantId}` per tenant.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

TENANTS = ("acme-bank", "globex-health", "initech")


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Seeder:
    def __init__(self, containers: dict[str, ContainerProxy]) -> None:
        self.c = containers
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0

    def put(self, kind: str, doc: dict[str, Any]) -> None:
        now = iso(datetime.now(UTC))
        key = (kind, doc["id"])
        prev = self.docs.get(key)
        body = {**(prev or {}), **doc, "updatedAt": now}
        body.setdefault("createdAt", now)
        if prev is None:
            body["createdAt"] = body["updatedAt"] = now
        body = {k: v for k, v in body.items() if not k.startswith("_")}
        self.docs[key] = body
        self.c[kind].upsert_item(body)
        self.writes += 1


def phase_create(s: Seeder, now: datetime) -> None:
    day = timedelta(days=1)
    for t in TENANTS:
        s.put("risks", {"id": f"{t}-risk-vendor", "tenantId": t, "title": "Third-party vendor breach",
                        "category": "cyber", "likelihood": 4, "impact": 5, "score": 20, "status": "open",
                        "ownerId": "ciso"})
        s.put("risks", {"id": f"{t}-risk-fx", "tenantId": t, "title": "FX exposure", "category": "financial",
                        "likelihood": 3, "impact": 3, "score": 9, "status": "assessing", "ownerId": "cfo"})
        s.put("risks", {"id": f"{t}-risk-legacy", "tenantId": t, "title": "Legacy mainframe outage",
                        "category": "operational", "likelihood": 2, "impact": 4, "score": 8, "status": "open"})
        s.put("controls", {"id": f"{t}-ctl-mfa", "tenantId": t, "name": "MFA on admin accounts",
                           "framework": "ISO27001", "status": "effective",
                           "lastTest": {"result": "pass", "testedAt": iso(now - 10 * day), "testedBy": "audit"}})
        s.put("controls", {"id": f"{t}-ctl-backup", "tenantId": t, "name": "Daily backup restore test",
                           "framework": "SOC2", "status": "effective",
                           "lastTest": {"result": "pass", "testedAt": iso(now - 3 * day), "testedBy": "ops"}})
        s.put("compliance", {"id": f"{t}-iso27001", "tenantId": t, "framework": "ISO27001",
                             "status": "partially_compliant",
                             "gaps": [{"id": "A.5.23", "requirement": "Cloud services security",
                                       "severity": "medium"}]})
        s.put("policies", {"id": f"{t}-pol-aup", "tenantId": t, "name": "Acceptable use policy",
                           "status": "active", "violations": []})
        s.put("assessments", {"id": f"{t}-asm-q3", "tenantId": t, "title": "Q3 vendor assessment",
                              "status": "in_progress", "startedAt": iso(now - 40 * day),
                              "dueDate": (now - 5 * day).date().isoformat()})  # overdue
        s.put("assessments", {"id": f"{t}-asm-soc2", "tenantId": t, "title": "SOC 2 readiness",
                              "status": "planned", "dueDate": (now + 30 * day).date().isoformat()})
        s.put("assessments", {"id": f"{t}-asm-dora", "tenantId": t, "title": "DORA gap analysis",
                              "status": "in_progress", "startedAt": iso(now - 2 * day),
                              "dueDate": (now + 14 * day).date().isoformat()})


def phase_update(s: Seeder, now: datetime) -> None:
    for t in TENANTS:
        s.put("risks", {"id": f"{t}-risk-vendor", "tenantId": t, "status": "mitigating", "score": 12})
        s.put("risks", {"id": f"{t}-risk-fx", "tenantId": t, "score": 12})  # score only: RISK_UPDATED
        s.put("controls", {"id": f"{t}-ctl-backup", "tenantId": t, "status": "ineffective",
                           "lastTest": {"result": "fail", "testedAt": iso(now), "testedBy": "ops",
                                        "notes": "restore of 2 of 40 volumes failed"}})
        s.put("compliance", {"id": f"{t}-iso27001", "tenantId": t, "status": "non_compliant",
                             "gaps": [{"id": "A.5.23", "requirement": "Cloud services security", "severity": "medium"},
                                      {"id": "A.8.13", "requirement": "Information backup", "severity": "high"}]})
        s.put("assessments", {"id": f"{t}-asm-dora", "tenantId": t, "status": "completed",
                              "completedAt": iso(now)})
    s.put("policies", {"id": "acme-bank-pol-aup", "tenantId": "acme-bank", "violations": [
        {"id": "v-1001", "severity": "high", "userId": "u-4711", "detectedAt": iso(now),
         "description": "Customer data uploaded to a personal cloud drive"}]})


def phase_delete(s: Seeder) -> None:
    # Soft delete: the flag makes RISK_DELETED; the ttl lets Cosmos purge the document later.
    s.put("risks", {"id": "initech-risk-legacy", "tenantId": "initech", "isDeleted": True, "ttl": 7 * 86400})


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def summary(api: str) -> None:
    print("\nWhat the service made of it:")
    for t in TENANTS:
        events = get_json(f"{api}/events/{t}?limit=1000")
        metrics = get_json(f"{api}/metrics/{t}")
        if events is None:
            print(f"  {t}: API not reachable at {api} (is `make run` running?)")
            continue
        counts: dict[str, int] = {}
        for e in events.get("events", []):
            counts[e["event"]["eventType"]] = counts.get(e["event"]["eventType"], 0) + 1
        print(f"  {t}: {sum(counts.values())} events " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        if metrics:
            w = metrics.get("windows", {}).get("5m", {})
            print(f"    5 min: accepted={w.get('accepted')} duplicates={w.get('duplicates')} "
                  f"change-feed delay mean={w.get('changeFeedDelayMs', {}).get('mean')} ms")
    print(f"\nTry: curl '{api}/events/acme-bank?eventType=RISK_STATUS_CHANGED'  and  curl {api}/metrics/acme-bank")


async def overdue() -> None:
    from shared.app.jobs import run_overdue_check
    from shared.app.services import reset_services

    try:
        run = await run_overdue_check()
        print(f"overdue check: {run.overdue} overdue assessment(s), {run.published} ASSESSMENT_OVERDUE "
              f"published ({run.already} already sent), {run.request_charge:.1f} RU")
    finally:
        await reset_services()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", default=None, help="the runner's base URL (default http://127.0.0.1:$PORT)")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between phases (the runner polls each second)")
    ap.add_argument("--settings", default=None, help="local.settings.json (default: the repo's)")
    args = ap.parse_args(argv)

    from pathlib import Path

    from devhost.app_loader import load_settings
    from shared.core.settings import get_settings

    load_settings(Path(args.settings) if args.settings else None)
    s = get_settings()
    api = args.api or f"http://127.0.0.1:{s.port}"
    client = CosmosClient(s.cosmos_endpoint, s.cosmos_key, connection_verify=False, enable_endpoint_discovery=False)
    try:
        db = client.create_database_if_not_exists(s.cosmos_database)
    except Exception as exc:  # noqa: BLE001
        sys.exit(f"Cosmos server not reachable at {s.cosmos_endpoint} ({type(exc).__name__}); start `make run` first")
    names = {"risks": s.cosmos_risks_container, "controls": s.cosmos_controls_container,
             "assessments": s.cosmos_assessments_container, "compliance": s.cosmos_compliance_container,
             "policies": s.cosmos_policies_container}
    containers = {k: db.create_container_if_not_exists(v, partition_key=PartitionKey("/tenantId"))
                  for k, v in names.items()}
    seeder = Seeder(containers)
    now = datetime.now(UTC)
    for label, step in (("create", lambda: phase_create(seeder, now)), ("update", lambda: phase_update(seeder, now)),
                        ("soft delete", lambda: phase_delete(seeder))):
        before = seeder.writes
        step()
        print(f"{label}: {seeder.writes - before} document write(s) into {s.cosmos_database}")
        time.sleep(args.pause)
    asyncio.run(overdue())
    summary(api)


if __name__ == "__main__":
    main()
