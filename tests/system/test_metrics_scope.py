"""Tenant callers see their tenant only on GET /metrics/{tenantId} (issue 12, item 6)."""
from __future__ import annotations

from tests.system.harness import App, tenant

SERVICE_WIDE = {"instanceMemory", "kafka", "redis", "cosmos", "streamProcessing"}


def test_a_tenant_caller_gets_its_figures_and_no_service_wide_ones(app: App) -> None:
    t, other = tenant(), tenant()
    event = {"tenantId": t, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE", "data": {}}
    assert app.post("/events", json=event, tenants=[t]).status_code == 201
    for grant in ({"tenants": [t], "roles": []}, {"tenants": [], "roles": [f"Tenant.{t}"]},
                  {"tenants": [t, other], "roles": []}):
        r = app.get(f"/metrics/{t}", **grant)  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["windows"]["1m"]["accepted"] == 1  # its own figures
        assert "service" not in body, sorted(body)
        assert "memory" not in body["alerts"]["conditions"]
        assert not SERVICE_WIDE & set(str(k) for k in body), sorted(body)
    admin = app.get(f"/metrics/{t}").json()
    assert SERVICE_WIDE <= set(admin["service"]) and "memory" in admin["alerts"]["conditions"]
    assert admin["windows"]["1m"]["accepted"] == 1
