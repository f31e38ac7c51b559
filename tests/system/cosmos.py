"""The platform's side of change capture, as the system tier sees it: documents written to the local
Cosmos server with the azure-cosmos SDK (what the GRC platform's own services do), and the events
that come out at `GET /events/{tenantId}`."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy, CosmosClient

from tests.system.harness import App, wait_for


def iso(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MONITORED = ("risks", "controls", "assessments", "compliance", "policies")


class Platform:
    """Writes to the monitored containers of the app's Cosmos DB account and database.

    It waits until the app's change-feed processors have started (each lease store's `.info` marker is
    in the lease container, as the Functions host's processors write it): a document written before
    that would rightly count as one that existed before the processor (a backfill)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.client = CosmosClient(env["COSMOS_DB_ENDPOINT"], env["COSMOS_DB_KEY"], connection_verify=False,
                                   enable_endpoint_discovery=False)
        self.db = self.client.get_database_client(env["COSMOS_DB_DATABASE"])
        self.env = env
        self._ready: dict[str, ContainerProxy] = {}
        leases = self.db.get_container_client(env["COSMOS_LEASE_CONTAINER"])

        def started() -> bool:
            try:
                ids = [d["id"] for d in leases.query_items("SELECT c.id FROM c", enable_cross_partition_query=True)]
            except AzureError:  # an HTTP error, or the server not yet taking connections: not started yet
                return False
            return all(any(i.startswith(f"{kind}-") and i.endswith(".info") for i in ids) for kind in MONITORED)

        wait_for(started, 30, what="the app's change-feed processors started")

    def container(self, kind: str) -> ContainerProxy:
        """A monitored container by kind (risks, controls, assessments, compliance, policies). The
        runner creates them when its Cosmos triggers start (as infra does in Azure): wait for that."""
        if kind not in self._ready:
            proxy = self.db.get_container_client(self.env[f"COSMOS_{kind.upper()}_CONTAINER"])

            def exists() -> bool:
                try:
                    proxy.read()
                    return True
                except AzureError:  # not created yet, or the server not answering yet
                    return False

            wait_for(exists, 30, what=f"the {kind} container")
            self._ready[kind] = proxy
        return self._ready[kind]

    def create(self, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Insert as the document conventions say: createdAt == updatedAt, both now."""
        now = iso()
        return self.container(kind).create_item({"createdAt": now, "updatedAt": now, **doc})

    def update(self, kind: str, doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """Replace with `changes`, moving updatedAt (Cosmos' system fields left out)."""
        body = {k: v for k, v in doc.items() if not k.startswith("_")}
        body.update(changes, updatedAt=iso())
        return self.container(kind).replace_item(body["id"], body)


FEED_TIMEOUT = 60.0  # seconds for a change written to the local Cosmos server to come out as events

# One sentinel per container, written last: the local Cosmos server has one partition per container,
# so once a sentinel's event is out, every change written before it in that container has been handled.
SENTINELS: dict[str, tuple[dict[str, Any], str]] = {
    "risks": ({"title": "Sentinel", "status": "open"}, "RISK_CREATED"),
    "controls": ({"name": "Sentinel", "status": "effective"}, "CONTROL_CREATED"),
    "assessments": ({"title": "Sentinel", "status": "in_progress"}, "ASSESSMENT_STARTED"),
    "compliance": ({"status": "compliant"}, "COMPLIANCE_STATUS_CHANGED"),
    "policies": ({"name": "Sentinel", "violations": [{"id": "v0", "severity": "low"}]}, "POLICY_VIOLATION"),
}


def settled(app: App, p: Platform, t: str, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """Write a sentinel to each of `kinds` and wait for their events: the tenant's change-feed events
    (oldest first) once everything written before is handled, the sentinels' own left out."""
    names = {f"sentinel-{kind}-{uuid.uuid4().hex[:6]}": kind for kind in kinds}
    for name, kind in names.items():
        p.create(kind, {"id": name, "tenantId": t, **SENTINELS[kind][0]})

    def all_there() -> list[dict[str, Any]] | None:
        evs = events(app, t, source="COSMOS_DB")
        seen = {(e["entityId"], e["eventType"]) for e in evs}
        return evs if all((n, SENTINELS[k][1]) in seen for n, k in names.items()) else None

    evs = wait_for(all_there, FEED_TIMEOUT, 0.3, f"the sentinels of {kinds}")
    return [e for e in evs if not e["entityId"].startswith("sentinel-")]


def events(app: App, tenant: str, **params: str) -> list[dict[str, Any]]:
    """The tenant's events, oldest first (GET /events answers newest first). `source="COSMOS_DB"`
    leaves out the service's own events (the monitor timer's SYSTEM_PERFORMANCE each minute)."""
    body = app.get(f"/events/{tenant}", params={"limit": "1000", **params}, tenants=[tenant]).json()
    return [e["event"] for e in reversed(body["events"])]


def wait_events(app: App, tenant: str, n: int, timeout: float = 30.0, **params: str) -> list[dict[str, Any]]:
    """At least `n` events of the tenant (polled), oldest first."""
    return wait_for(lambda: (evs if len(evs := events(app, tenant, **params)) >= n else None), timeout,
                    what=f"{n} event(s) of {tenant}")


def types_by_entity(evs: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in evs:
        out.setdefault(e["entityId"], []).append(e["eventType"])
    return out
