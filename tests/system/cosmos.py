"""The platform's side of change capture, as the system tier sees it: documents written to the local
Cosmos server with the azure-cosmos SDK (what the GRC platform's own services do), and the events
that come out at `GET /events/{tenantId}`."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

from tests.system.harness import App, wait_for


def iso(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Platform:
    """Writes to the monitored containers of the app's Cosmos DB account and database."""

    def __init__(self, env: dict[str, str]) -> None:
        self.client = CosmosClient(env["COSMOS_DB_ENDPOINT"], env["COSMOS_DB_KEY"], connection_verify=False,
                                   enable_endpoint_discovery=False)
        self.db = self.client.create_database_if_not_exists(env["COSMOS_DB_DATABASE"])
        self.env = env

    def container(self, kind: str) -> ContainerProxy:
        """A monitored container by kind (risks, controls, assessments, compliance, policies)."""
        name = self.env[f"COSMOS_{kind.upper()}_CONTAINER"]
        return self.db.create_container_if_not_exists(name, partition_key=PartitionKey("/tenantId"))

    def create(self, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Insert as the document conventions say: createdAt == updatedAt, both now."""
        now = iso()
        return self.container(kind).create_item({"createdAt": now, "updatedAt": now, **doc})

    def update(self, kind: str, doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """Replace with `changes`, moving updatedAt (Cosmos' system fields left out)."""
        body = {k: v for k, v in doc.items() if not k.startswith("_")}
        body.update(changes, updatedAt=iso())
        return self.container(kind).replace_item(body["id"], body)


def events(app: App, tenant: str, **params: str) -> list[dict[str, Any]]:
    """The tenant's events, oldest first (GET /events answers newest first)."""
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
