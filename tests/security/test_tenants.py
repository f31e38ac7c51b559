"""Tenant grants from claims/roles and the authorisation checks (single and bulk)."""
from __future__ import annotations

import pytest

from shared.security.errors import TenantForbidden
from shared.security.principal import ALL_TENANTS, Principal
from shared.security.tenants import authorize, authorize_all, claim_values, grants_from


def principal(tenants: frozenset[str] | str) -> Principal:
    return Principal(subject="s", tenants=tenants, auth_method="jwt")  # type: ignore[arg-type]


def test_claim_values_accepts_array_and_space_separated() -> None:
    # Array items are taken whole: an item is one value, never split into several.
    assert claim_values(["a b", "c"]) == ["a b", "c"]
    assert claim_values(["acme\n", "Tenant.x Events.Admin"]) == ["acme\n", "Tenant.x Events.Admin"]
    # A string claim is split on spaces only: a newline or tab does not separate (nor vanish).
    assert claim_values(" acme  globex ") == ["acme", "globex"]
    assert claim_values("acme\nglobex\t") == ["acme\nglobex\t"]
    assert claim_values(None) == [] and claim_values(42) == [] and claim_values([1, {"x": 1}]) == []


def test_a_role_item_cannot_smuggle_the_admin_role() -> None:
    assert grants_from([], claim_values(["Tenant.acme Events.Admin"]), "Events.Admin") == frozenset()
    assert grants_from(claim_values(["acme\n", "beta gamma"]), [], "Events.Admin") == frozenset()


def test_grants_from_claim_roles_and_admin() -> None:
    assert grants_from(["acme"], ["Tenant.globex", "Reader"], "Events.Admin") == frozenset({"acme", "globex"})
    assert grants_from(["acme"], ["Events.Admin"], "Events.Admin") == ALL_TENANTS
    # Only well-formed tenant ids: no wildcards, no hash-tag breakers, no empty role suffix.
    assert grants_from(["*", "a}b", "UPPER", "ok-1"], ["Tenant.", "Tenant.*", "Tenant.x y"], "Events.Admin") == \
        frozenset({"ok-1"})
    assert grants_from([], ["Events.Admin"], "") == frozenset()  # no admin role configured: none is admin


def test_authorize() -> None:
    p = principal(frozenset({"acme"}))
    authorize(p, "acme")
    with pytest.raises(TenantForbidden) as err:
        authorize(p, "globex")
    assert err.value.status == 403 and "globex" not in err.value.detail
    authorize(principal(ALL_TENANTS), "globex")
    with pytest.raises(TenantForbidden):
        authorize(principal(frozenset()), "acme")


def test_bulk_is_refused_whole_if_any_tenant_is_foreign() -> None:
    p = principal(frozenset({"acme", "globex"}))
    authorize_all(p, ["acme", "globex", "acme"])
    with pytest.raises(TenantForbidden):
        authorize_all(p, ["acme", "acme", "initech", "globex"])
