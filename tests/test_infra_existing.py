"""Every `existing` resource infra/ uses is created by infra/ in the same deployment, under the same
condition: a reference (a role assignment's scope, a parent, a listKeys) to a resource that is not
there fails the whole deployment with NotFound (issue 17: the `redis-password` secret was created only
with Redis key auth but always referenced).

No Bicep compiler runs here, so tests/system/bicep.py evaluates the templates: for every combination
of main.bicep's boolean parameters and for each parameter file, each module that is deployed, each
`existing` resource its declarations use under their conditions must match (type and full name, both
evaluated) a resource that some deployed module creates under its condition.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.system.bicep import INFRA, BicepError, Scope, parameter_file, template

MAIN = INFRA / "main.bicep"
# What every deployment passes in any case (azd's environment, the caller's audience).
REQUIRED = {"environmentName": "env1", "location": "westeurope", "authAudience": "api-client-id"}


def scenarios() -> Iterator[tuple[str, dict[str, Any]]]:
    bools = sorted(name for name, p in template(MAIN).params.items() if p.type == "bool")
    assert len(bools) >= 5, bools
    for combo in itertools.product((False, True), repeat=len(bools)):
        yield ",".join(f"{n}={v}" for n, v in zip(bools, combo)), {**REQUIRED, **dict(zip(bools, combo))}
    azd_env = {"AZURE_ENV_NAME": "env1", "AZURE_LOCATION": "westeurope", "GRC_AUTH_AUDIENCE": "api-client-id"}
    yield "main.parameters.json", parameter_file(INFRA / "main.parameters.json", azd_env)
    for path in sorted((INFRA / "env").glob("*.parameters.json")):
        yield path.name, parameter_file(path, extra={"authAudience": "api-client-id"})


def deployed_modules(main: Scope) -> dict[str, Scope]:
    return {sym: main.module(sym) for sym in main.template.modules if main.deployed(sym)}


def created(scopes: dict[str, Scope]) -> tuple[set[tuple[str, tuple[str, ...]]], set[str]]:
    """(identities of the single resources created, types created by loops), for the types that some
    module references as `existing` (others, e.g. role assignments named by guid(), are not needed)."""
    wanted = {r.type for s in scopes.values() for r in s.template.resources.values() if r.existing}
    single: set[tuple[str, tuple[str, ...]]] = set()
    looped: set[str] = set()
    for scope in scopes.values():
        for sym, res in scope.template.resources.items():
            if res.existing or res.type not in wanted:
                continue
            if res.loop:
                looped.add(res.type)
            elif scope.deployed(sym):
                single.add(scope.identity(sym))
    return single, looped


def used(scope: Scope, symbol: str) -> list[str]:
    """The declarations that use `symbol` in this deployment (their own condition holds); an
    `existing` child counts when it is used itself."""
    users = []
    for sym, cond in scope.references(symbol):
        child = scope.template.resources.get(sym)
        if child is not None and child.existing:
            if used(scope, sym):
                users.append(sym)
        elif cond is None or scope.eval(cond) is True:
            users.append(sym)
    return users


def problems(name: str, params: dict[str, Any]) -> tuple[list[str], int]:
    """(what is wrong, how many used `existing` resources were checked)."""
    main = Scope(MAIN, params)
    scopes = deployed_modules(main)
    single, looped = created(scopes)
    found: list[str] = []
    checked = 0
    for module, scope in scopes.items():
        for sym, res in scope.template.resources.items():
            if not res.existing:
                continue
            users = used(scope, sym)
            if not users:
                continue
            checked += 1
            where = f"[{name}] {scope.template.name}: existing {sym} (used by {users})"
            if not scope.deployed(sym):
                found.append(f"{where} is used while its own condition is false")
                continue
            identity = scope.identity(sym)
            if identity in single:
                continue
            if identity[0] in looped:
                found.append(f"{where}: {identity} may come from a loop; cannot tell, make it explicit")
            else:
                found.append(f"{where}: nothing in this deployment creates {identity}")
    return found, checked


@pytest.mark.parametrize("name,params", list(scenarios()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_used_existing_resource_is_created_in_the_same_deployment(name: str, params: dict[str, Any]) -> None:
    found, checked = problems(name, params)
    assert not found
    # Always used: the storage account (functionapp.bicep and roles.bicep), Cosmos DB, Event Hubs,
    # App Insights, the Redis cluster and database (roles.bicep); the vault, its two secrets and the
    # send rule only with Redis key auth or Event Hubs SAS. Fewer means the check went blind.
    assert checked >= 7, checked


def test_the_check_sees_the_defect_it_guards_against(tmp_path: Path) -> None:
    """roles.bicep as it was before issue 17: the secret referenced with no condition. With the
    default Entra ID auth nothing creates it, and the check says so."""
    roles = (INFRA / "modules" / "roles.bicep").read_text()
    broken = roles.replace("existing = if (!redisEntraAuth) {\n  parent: vault\n  name: 'redis-password'",
                           "existing = {\n  parent: vault\n  name: 'redis-password'")
    broken = broken.replace("resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = "
                            "if (!redisEntraAuth) {", "resource secretsUser "
                            "'Microsoft.Authorization/roleAssignments@2022-04-01' = {")
    assert broken != roles and broken.count("if (!redisEntraAuth)") == 0
    copy = tmp_path / "infra"
    for path in INFRA.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(INFRA)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(broken if path.name == "roles.bicep" else path.read_text())
    main = Scope(copy / "main.bicep", {**REQUIRED, "redisEntraAuth": True})
    scopes = deployed_modules(main)
    single, _ = created(scopes)
    roles_scope = scopes["roles"]
    assert used(roles_scope, "redisPasswordSecret") == ["secretsUser"]
    assert roles_scope.identity("redisPasswordSecret") not in single
    # ... and with key auth the same secret is created, so the reference is fine there.
    keyed = Scope(copy / "main.bicep", {**REQUIRED, "redisEntraAuth": False})
    assert deployed_modules(keyed)["roles"].identity("redisPasswordSecret") in created(deployed_modules(keyed))[0]


def test_what_exists_only_in_azure_is_not_guessed() -> None:
    functionapp = Scope(MAIN, REQUIRED).module("functionApp")
    assert functionapp.identity("site")[0] == "Microsoft.Web/sites"
    with pytest.raises(BicepError, match="known only after deployment"):
        functionapp.output("principalId")
