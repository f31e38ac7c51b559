"""Which tenants an identity is granted, and the check every tenant-scoped operation makes.

Mapping (documented in docs/security.md):
- claim `AUTH_TENANT_CLAIM` (default `tenants`): a JSON array of tenant ids, each item taken whole,
  or one string of ids separated by spaces (U+0020 only; custom claims from claims-mapping policies
  are strings);
- app roles `Tenant.<tenantId>` (Entra app roles, emitted in the `roles` claim);
- the platform-admin role `AUTH_ADMIN_ROLE` (default `Events.Admin`) grants every tenant.
Values that are not valid tenant ids (shared.core.events.is_tenant_id, the one rule) are ignored, so a
malformed grant never widens access: `["acme\n"]` or `["acme beta"]` grants nothing.
"""
from __future__ import annotations

from typing import Any, Iterable

from shared.core.events import is_tenant_id
from shared.security.errors import TenantForbidden
from shared.security.principal import ALL_TENANTS, Grants, Principal

TENANT_ROLE_PREFIX = "Tenant."


def claim_values(value: Any) -> list[str]:
    """A claim as a list of strings: an array (each string item whole, never split), or one string
    of values separated by spaces. Only U+0020 separates: "acme\n" stays one (invalid) value
    instead of becoming "acme"."""
    if isinstance(value, str):
        return [v for v in value.split(" ") if v]
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, str)]
    return []


def grants_from(tenant_claim: Iterable[str], roles: Iterable[str], admin_role: str) -> Grants:
    roles = set(roles)
    if admin_role and admin_role in roles:
        return ALL_TENANTS
    tenants = {t for t in tenant_claim if is_tenant_id(t)}
    tenants |= {
        r[len(TENANT_ROLE_PREFIX):] for r in roles
        if r.startswith(TENANT_ROLE_PREFIX) and is_tenant_id(r[len(TENANT_ROLE_PREFIX):])
    }
    return frozenset(tenants)


def authorize(principal: Principal, tenant_id: str) -> None:
    """Raise TenantForbidden unless the principal is granted `tenant_id`."""
    if not principal.grants(tenant_id):
        raise TenantForbidden(f"{principal.subject} not granted {tenant_id!r}")


def authorize_all(principal: Principal, tenant_ids: Iterable[str]) -> None:
    """Bulk rule: the whole request is refused if any tenant in it is not granted
    (docs/security.md, 'Bulk requests')."""
    if principal.is_admin:  # every tenant: no check per tenant of a bulk naming a thousand
        return
    for tenant_id in set(tenant_ids):
        authorize(principal, tenant_id)



def tenant_costs(raw_events: Iterable[Any]) -> dict[str, int]:
    """Events per tenant named in raw (not yet validated) events: what a write must be granted and
    what it costs in rate-limit tokens. Events without a string tenantId name no tenant; validation
    rejects them before anything is written."""
    costs: dict[str, int] = {}
    for event in raw_events:
        tenant = event.get("tenantId") if isinstance(event, dict) else None
        if isinstance(tenant, str):
            costs[tenant] = costs.get(tenant, 0) + 1
    return costs
