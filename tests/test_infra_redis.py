"""infra/ deploys Azure Managed Redis the way the app's Redis client needs it.

No Bicep compiler runs here, so these read the Bicep text. They tie the Redis resource to the code
that talks to it: the streams destination trims with XADD MINID (Redis >= 6.2, so not the classic
Microsoft.Cache/redis tiers on 6.0), the client is a plain redis-py `Redis` (so the database must use
the EnterpriseCluster policy, one endpoint), and it authenticates with REDIS_PASSWORD (so access
keys must stay enabled until the client gets an Entra credential provider).
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
REDIS = (INFRA / "modules" / "redis.bicep").read_text()
MAIN = (INFRA / "main.bicep").read_text()
CLIENT = (ROOT / "shared" / "storage" / "redisconn.py").read_text()
STREAMS = (ROOT / "shared" / "destinations" / "redis_streams.py").read_text()

RESOURCE = re.compile(r"'(Microsoft\.Cache/[\w/]+)@([\w-]+)'")


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def prop(text: str, name: str) -> str:
    """The single value of `name: value` in a Bicep text (fails if absent or ambiguous)."""
    values = re.findall(rf"^\s*{name}: (.+?)\s*$", text, re.MULTILINE)
    assert len(values) == 1, f"{name}: expected one value, found {values}"
    return values[0]


def test_no_classic_azure_cache_for_redis_left() -> None:
    """Classic Basic/Standard/Premium run Redis 6.0; the streams destination needs MINID (6.2)."""
    assert "'MINID'" in STREAMS, "the streams destination no longer trims with MINID: revisit this test"
    types = {(p.name, t) for p in bicep_files() for t, _ in RESOURCE.findall(p.read_text())}
    classic = {t for t in types if t[1].split("/")[:2] == ["Microsoft.Cache", "redis"]}
    assert not classic, f"classic Azure Cache for Redis still referenced: {sorted(classic)}"
    assert ("redis.bicep", "Microsoft.Cache/redisEnterprise") in types
    assert ("redis.bicep", "Microsoft.Cache/redisEnterprise/databases") in types


def test_one_api_version_for_every_redis_enterprise_reference() -> None:
    """keyvault.bicep and roles.bicep reference the cluster `existing`; keep them on the same API."""
    refs = [ref for p in bicep_files() for ref in RESOURCE.findall(p.read_text())]
    versions = {version for kind, version in refs if kind.startswith("Microsoft.Cache/")}
    assert versions == {"2025-07-01"}, versions


def test_database_is_tls_only_single_endpoint_and_never_evicts() -> None:
    assert prop(REDIS, "minimumTlsVersion") == "'1.2'"
    assert prop(REDIS, "clientProtocol") == "'Encrypted'"
    assert prop(REDIS, "port") == "10000"
    assert prop(REDIS, "evictionPolicy") == "'NoEviction'"
    # The database must be named `default` (the only name Azure Managed Redis accepts), and the
    # Key Vault secret and access policy assignment point at that name.
    for path in ("modules/redis.bicep", "modules/keyvault.bicep", "modules/roles.bicep"):
        text = (INFRA / path).read_text()
        database = r"databases@[\w-]+' (?:existing )?= \{\n  parent: \w+\n  name: 'default'"
        assert re.search(database, text), path


def test_clustering_policy_matches_the_client() -> None:
    """EnterpriseCluster serves a plain `Redis` client; OSSCluster would need `RedisCluster`."""
    cluster_aware = "RedisCluster" in CLIENT
    assert prop(REDIS, "clusteringPolicy") == ("'OSSCluster'" if cluster_aware else "'EnterpriseCluster'")
    # Per-tenant hash tags keep each tenant's keys (and so each Lua script's keys) in one slot.
    assert '"{" + tenant_id + "}"' in CLIENT


def test_access_keys_follow_the_client_auth_mode() -> None:
    # The client signs in with an Entra token when REDIS_AUTH=entra, else with REDIS_PASSWORD.
    assert 'settings.redis_auth == "entra"' in CLIENT and "credential_provider=credential_provider" in CLIENT
    assert prop(REDIS, "accessKeysAuthentication") == "accessKeysEnabled ? 'Enabled' : 'Disabled'"
    assert prop(MAIN, "accessKeysEnabled") == "!redisEntraAuth"
    assert prop(MAIN, "redisKeyAuth") == "!redisEntraAuth"
    assert prop(MAIN, "REDIS_AUTH") == "redisEntraAuth ? 'entra' : 'key'"


def test_app_settings_point_at_the_managed_redis_endpoint() -> None:
    assert prop(MAIN, "REDIS_HOST") == "redis.outputs.hostName"
    assert prop(MAIN, "REDIS_PORT") == "string(redis.outputs.port)"
    assert prop(MAIN, "REDIS_SSL") == "'true'"
    secret_ref = "redisEntraAuth ? '' : '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.redisPasswordSecretUri})"
    assert prop(MAIN, "REDIS_PASSWORD").startswith(secret_ref)
    assert "value: redisDatabase.listKeys().primaryKey" in (INFRA / "modules" / "keyvault.bicep").read_text()


def test_private_endpoint_uses_the_redis_enterprise_group() -> None:
    text = (INFRA / "modules" / "privateEndpoints.bicep").read_text()
    line = next(line for line in text.splitlines() if "key: 'redis'" in line)
    assert "groupId: 'redisEnterprise'" in line and "zone: 'privatelink.redis.azure.net'" in line


def test_entra_access_policy_goes_to_the_app_identity() -> None:
    roles = (INFRA / "modules" / "roles.bicep").read_text()
    block = roles[roles.index("resource redisAccess"):]
    assert "databases/accessPolicyAssignments@" in block
    assert "accessPolicyName: 'default'" in block and "user: { objectId: principalId }" in block


def test_prop_helper() -> None:
    assert prop("a: 1\n  b: 'x'\n", "b") == "'x'"
