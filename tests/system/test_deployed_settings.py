"""The app settings infra/ deploys start a working app (issue 17: with the defaults, every function
failed at start).

infra/main.bicep builds the settings and infra/modules/functionapp.bicep puts them on the Function
App. No Bicep compiler and no Azure are reachable here, so tests/system/bicep.py evaluates them for a
parameter set, exactly as written, with three written-down substitutions:

1. ENDPOINTS: what Azure assigns at deployment (endpoints, account names) -> the local stand-ins'.
2. IDENTITY_STAND_INS: what Azure's managed identity (and Entra ID) provides -> what the local
   stand-in provides, one row per identity-only setting, each naming the test of the identity path
   itself. The table must cover every identity-only setting deployed, or the test fails.
3. TRANSPORT: TLS and the Event Hubs Kafka endpoint, which the local stand-ins do not speak.

The local runner then starts with exactly those settings and is driven from outside: every function
function_app.py registers is loaded (GET /admin/functions), the log has no "not loaded" and no error,
/health answers with every dependency healthy, a caller with an RS256 token for the deployed issuer
and audience is served, a document in each monitored container comes out of its Cosmos DB trigger,
every timer run by hand finishes "Succeeded", a retry-queue message is drained, and telemetry
reaches the (fake) ingestion endpoint of the deployed connection string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from azure.cosmos import CosmosClient, PartitionKey

from localdev import services
from tests.system.bicep import INFRA, Scope, parameter_file
from tests.system.checks import (
    drain_a_parked_delivery,
    errors_in,
    registered_functions,
    run_every_timer,
    succeeded,
)
from tests.system.fakes import FakeEntraKeys, FakeIngestion
from tests.system.harness import App, Stack, own_stack, start_app, tenant, wait_for

MAIN = INFRA / "main.bicep"
# The Application (client) ID of the API's app registration: GRC_AUTH_AUDIENCE / authAudience.
AUDIENCE = "6f1c1b9e-5d3a-4c1e-9a7b-0c0ffee0a0d1"

# How a new user deploys (infra/README.md): `azd up` with only the variables that must be set, and
# `az deployment sub create --parameters infra/env/prod.parameters.json authAudience=<client id>`.
# Secure parameters are in no file: azd generates `pageTokenKey` once, `az deployment` passes it.
PAGE_TOKEN_KEY = "deployed-page-token-key-" + "x" * 24
PARAMETER_SETS: dict[str, Callable[[], dict[str, Any]]] = {
    "azd-defaults": lambda: parameter_file(INFRA / "main.parameters.json", {
        "AZURE_ENV_NAME": "grc-dev", "AZURE_LOCATION": "westeurope", "GRC_AUTH_AUDIENCE": AUDIENCE},
        extra={"pageTokenKey": PAGE_TOKEN_KEY}),
    "prod-file": lambda: parameter_file(INFRA / "env" / "prod.parameters.json",
                                        extra={"authAudience": AUDIENCE, "pageTokenKey": PAGE_TOKEN_KEY}),
}
VAULT_URI = "https://kv-local.vault.azure.net/"


# ---- 1. endpoints -----------------------------------------------------------------------------
def endpoints(stack: Stack, ingestion: FakeIngestion) -> dict[str, Any]:
    """Module outputs Azure fills in at deployment -> the local stand-in's value."""
    azurite = stack.running["azurite"].ports
    return {
        "storage.outputs.name": services.AZURITE_ACCOUNT,
        # Azure: https://<account>.queue.core.windows.net/
        "storage.outputs.queueEndpoint": f"http://127.0.0.1:{azurite['queue']}/{services.AZURITE_ACCOUNT}/",
        # Azure: https://<account>.documents.azure.com:443/
        "cosmos.outputs.endpoint": stack.settings["COSMOS_DB_ENDPOINT"] + "/",
        # Azure: <name>.<region>.redis.azure.net, port 10000
        "redis.outputs.hostName": "127.0.0.1",
        "redis.outputs.port": stack.running["redis"].ports["port"],
        "monitoring.outputs.appInsightsConnectionString": ingestion.connection_string,
        # Only composes the Kafka endpoint (TRANSPORT below) and the AMQP namespace, unused with
        # EVENTHUBS_TRANSPORT=kafka.
        "eventhubs.outputs.name": "evhns-local",
        # Azure: https://<vault>.vault.azure.net/secrets/page-token-key
        "keyvault.outputs.pageTokenKeySecretUri": f"{VAULT_URI}secrets/page-token-key",
    }


# ---- 1b. Key Vault references -------------------------------------------------------------------
KEY_VAULT_REFERENCE = re.compile(r"@Microsoft\.KeyVault\(SecretUri=(?P<uri>[^)]+)\)")


def key_vault_secrets() -> dict[str, str]:
    """Secret URI -> value: what App Service resolves a Key Vault reference to with the app's identity
    (Key Vault Secrets User on that secret, infra/modules/roles.bicep). Each secret is the parameter
    infra/modules/keyvault.bicep stores in it."""
    return {f"{VAULT_URI}secrets/page-token-key": PAGE_TOKEN_KEY}


def resolve_key_vault_references(settings: dict[str, str]) -> dict[str, str]:
    secrets = key_vault_secrets()
    out = dict(settings)
    for name, value in settings.items():
        if (m := KEY_VAULT_REFERENCE.fullmatch(value)) is not None:
            assert m.group("uri") in secrets, f"{name} refers to a secret this test does not know: {value}"
            out[name] = secrets[m.group("uri")]
    return out


def deployed_settings(params: dict[str, Any], stand_ins: dict[str, Any]) -> dict[str, str]:
    """The app settings the Function App gets: functionapp.bicep's `appsettings` config resource
    (and any `siteConfig.appSettings` entries), evaluated. App settings are strings."""
    main = Scope(MAIN, params, stand_ins=stand_ins)
    app = main.module("functionApp")
    resources = app.template.resources
    config = [s for s, r in resources.items()
              if r.type == "Microsoft.Web/sites/config" and app.property(s, "name") == "appsettings"]
    assert len(config) == 1, config
    settings = dict(app.property(config[0], "properties"))
    for site, res in resources.items():
        site_config = res.prop("properties", "siteConfig") if res.type == "Microsoft.Web/sites" else None
        if site_config is not None and any(key == "appSettings" for key, _ in site_config.a):
            for entry in app.property(site, "properties", "siteConfig", "appSettings"):
                assert entry["name"] not in settings, f"{entry['name']} set twice"
                settings[entry["name"]] = entry["value"]
    not_strings = {k: v for k, v in settings.items() if not isinstance(v, str)}
    assert not not_strings, f"app settings must be strings: {not_strings}"
    return settings


# ---- 2. identity ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StandIn:
    deployed: dict[str, str | None]  # identity-only settings as deployed (None: any value)
    local: dict[str, str]  # what the local stand-in sets instead (added or replaced)
    why: str
    identity_path_tested_by: str


def identity_stand_ins(stack: Stack, keys: FakeEntraKeys) -> list[StandIn]:
    """IDENTITY_STAND_INS: what Azure's identity provides, the local stand-in provides."""
    return [
        StandIn({"STORAGE_ACCOUNT_NAME": None, "STORAGE_CONNECTION_STRING__queueServiceUri": None},
                {"STORAGE_CONNECTION_STRING": stack.storage},
                "Tables and Queues sign in with DefaultAzureCredential on https://<account>.<service>."
                "core.windows.net; Azurite takes its account key. STORAGE_CONNECTION_STRING is also the queue "
                "triggers' connection, and a connection string wins over <connection>__queueServiceUri, as "
                "in the host",
                "tests/test_devhost_drivers.py::test_queue_connection_string_or_identity_based_service_uri"),
        StandIn({"AzureWebJobsStorage__accountName": None}, {},
                "host storage (timer locks and schedule status): the local runner keeps timer status in its "
                "state directory and needs none",
                "Azure only: Storage Blob Data Owner in infra/modules/roles.bicep"),
        StandIn({"COSMOS__accountEndpoint": None, "COSMOS_DB_ENDPOINT": None},
                {"COSMOS_DB_KEY": services.LOCAL_COSMOS_KEY},
                "the account has local auth disabled: triggers and SDK calls use the identity; the local "
                "server's key stands in (the runner pairs it with COSMOS__accountEndpoint)",
                "tests/test_devhost_drivers.py::test_connection_string_or_identity_prefix"),
        StandIn({"REDIS_AUTH": "entra"}, {"REDIS_AUTH": "key"},
                "the identity's Entra ID token as Redis credentials; the local redis-server has no Entra ID",
                "tests/test_redis_entra_auth.py (a real Redis ACL user, a fake identity provider)"),
        StandIn({"KAFKA_SECURITY": "oauth"}, {"KAFKA_SECURITY": "plaintext"},
                "OAUTHBEARER with the identity's token for Event Hubs; the local broker has no SASL",
                "tests/test_kafka_destination.py::test_oauth_config_gets_a_token_for_the_namespace_scope"),
        StandIn({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD"},
                {"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": ""},
                "telemetry sent with the identity's token; the fake ingestion endpoint takes the key",
                "tests/test_telemetry.py::test_entra_token_is_sent_with_every_post"),
        StandIn({"AUTH_JWKS_URL": ""}, {"AUTH_JWKS_URL": keys.jwks_url},
                "callers' tokens are signed by Entra ID, whose keys the app finds from the deployed "
                "AUTH_ISSUER (login.microsoftonline.com); the fake Entra keys sign this test's tokens for the "
                "same issuer and audience",
                "tests/security/test_identity.py (keys discovered from the issuer's OpenID configuration)"),
    ]


def needs_identity(settings: dict[str, str]) -> set[str]:
    """Deployed settings that work only with Azure's managed identity or Entra ID."""
    found = {k for k in settings if k.endswith(("__accountEndpoint", "__queueServiceUri", "__accountName",
                                                "__serviceUri", "__fullyQualifiedNamespace"))}
    if settings.get("STORAGE_ACCOUNT_NAME") and not settings.get("STORAGE_CONNECTION_STRING"):
        found.add("STORAGE_ACCOUNT_NAME")
    if settings.get("COSMOS_DB_ENDPOINT") and not settings.get("COSMOS_DB_KEY"):
        found.add("COSMOS_DB_ENDPOINT")
    if settings.get("REDIS_AUTH") == "entra":
        found.add("REDIS_AUTH")
    if settings.get("KAFKA_SECURITY") == "oauth":
        found.add("KAFKA_SECURITY")
    if "aad" in settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "").lower():
        found.add("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
    if "jwt" in settings.get("AUTH_MODE", "").split("+") and not settings.get("AUTH_JWKS_URL"):
        found.add("AUTH_JWKS_URL")
    for endpoint, key in (("AZURE_SEARCH_ENDPOINT", "AZURE_SEARCH_API_KEY"),
                          ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")):
        if settings.get(endpoint) and not settings.get(key):
            found.add(endpoint)  # no local stand-in: the test fails until one is added
    return found


# ---- 3. transport -----------------------------------------------------------------------------
def transport(stack: Stack) -> dict[str, tuple[str, str]]:
    return {
        "REDIS_SSL": ("false", "Azure Managed Redis speaks TLS only (port 10000); the local redis-server "
                               "plain TCP"),
        "KAFKA_BROKER": (stack.settings["KAFKA_BROKER"], "Event Hubs' Kafka endpoint <namespace>.servicebus."
                         "windows.net:9093 (built in main.bicep) -> the local Kafka-protocol broker"),
    }


def local_settings(deployed: dict[str, str], stack: Stack, keys: FakeEntraKeys) -> dict[str, str]:
    """The deployed settings with the identity and transport stand-ins, nothing else."""
    rows = identity_stand_ins(stack, keys)
    covered = {name for row in rows for name in row.deployed}
    missing = needs_identity(deployed) - covered
    assert not missing, f"identity-only settings without a local stand-in in IDENTITY_STAND_INS: {sorted(missing)}"
    env = resolve_key_vault_references(deployed)
    for row in rows:
        for name, value in row.deployed.items():
            assert name in deployed, f"IDENTITY_STAND_INS names {name}, which infra/ no longer deploys"
            assert value is None or deployed[name] == value, f"{name} is deployed as {deployed[name]!r}"
        env.update(row.local)
    for name, (value, _why) in transport(stack).items():
        assert name in deployed, name
        env[name] = value
    return env


# ---- monitored documents, one per container (docs/change-capture.md conventions) ---------------
def documents(t: str) -> dict[str, dict[str, Any]]:
    stamp = "2026-11-01T00:00:00Z"
    base = {"tenantId": t, "createdAt": stamp, "updatedAt": stamp}
    return {
        "COSMOS_RISKS_CONTAINER": {**base, "id": f"risk-{t}", "status": "open", "score": 12},
        "COSMOS_CONTROLS_CONTAINER": {**base, "id": f"ctl-{t}", "status": "active"},
        "COSMOS_ASSESSMENTS_CONTAINER": {**base, "id": f"asm-{t}", "status": "in_progress", "startedAt": stamp,
                                         "dueDate": "2099-01-01"},
        "COSMOS_COMPLIANCE_CONTAINER": {**base, "id": f"cmp-{t}", "status": "compliant", "gaps": []},
        "COSMOS_POLICIES_CONTAINER": {**base, "id": f"pol-{t}", "status": "active",
                                      "violations": [{"id": "v1", "severity": "high", "detectedAt": stamp}]},
    }


# Each container's documents become events of its own family (docs/change-capture.md).
FAMILY = {"COSMOS_RISKS_CONTAINER": "RISK_", "COSMOS_CONTROLS_CONTAINER": "CONTROL_",
          "COSMOS_ASSESSMENTS_CONTAINER": "ASSESSMENT_", "COSMOS_COMPLIANCE_CONTAINER": "COMPLIANCE_",
          "COSMOS_POLICIES_CONTAINER": "POLICY_"}


@pytest.fixture(scope="module")
def azure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Its own stand-ins: the session app's change feed would share the lease container."""
    with own_stack(tmp_path_factory.mktemp("deployed-stack")) as stack:
        yield stack


@pytest.fixture
def fakes() -> Iterator[tuple[FakeEntraKeys, FakeIngestion]]:
    keys, ingestion = FakeEntraKeys(), FakeIngestion()
    try:
        yield keys, ingestion
    finally:
        keys.close()
        ingestion.close()


@pytest.mark.parametrize("parameter_set", list(PARAMETER_SETS))
def test_the_deployed_settings_start_every_function(parameter_set: str, azure_stack: Stack,
                                                     fakes: tuple[FakeEntraKeys, FakeIngestion],
                                                     tmp_path: Path) -> None:
    keys, ingestion = fakes
    deployed = deployed_settings(PARAMETER_SETS[parameter_set](), endpoints(azure_stack, ingestion))
    # What the fixes of issue 17 put there: a working issuer from the deploying tenant, the audience
    # the deployer gave, Entra ID everywhere.
    tid = Scope(MAIN, {}).deployment.tenant_id
    assert deployed["AUTH_MODE"] == "jwt" and deployed["AUTH_AUDIENCE"] == f"{AUDIENCE},api://{AUDIENCE}"
    assert deployed["AUTH_ISSUER"] == (f"https://login.microsoftonline.com/{tid}/v2.0,"
                                       f"https://sts.windows.net/{tid}/")
    env = local_settings(deployed, azure_stack, keys)
    app = start_app(env, tmp_path)
    try:
        check_every_function_initialises(app)
        check_health(app)
        t = tenant("dep")
        token = {"authorization": "Bearer " + keys.token(env["AUTH_ISSUER"].split(",")[0], AUDIENCE, [t],
                                                         env["AUTH_TENANT_CLAIM"])}
        check_a_caller_is_served(app, t, token)
        # The v1.0 token Entra ID issues when the API's app registration keeps its default
        # requestedAccessTokenVersion (null): the tenant's v1 issuer, the app ID URI as audience.
        v1 = keys.token(f"https://sts.windows.net/{tid}/", f"api://{AUDIENCE}", [t], env["AUTH_TENANT_CLAIM"])
        check_a_caller_is_served(app, t, {"authorization": "Bearer " + v1})
        check_change_capture(app, env, t, token)
        run_every_timer(app)
        assert not errors_in(app.log()), errors_in(app.log())
        captured = app.get(f"/events/{t}", anonymous=True, headers=token, params={"source": "COSMOS_DB"})
        drain_a_parked_delivery(app, azure_stack, env, t, captured.json()["events"][0]["event"])
        wait_for(lambda: ingestion.received(), 90, 1.0, "telemetry at the deployed ingestion endpoint")
        assert not errors_in(app.log()), errors_in(app.log())
        assert keys.fetches >= 1  # the keys came from AUTH_JWKS_URL, as from Entra ID
    finally:
        app.stop()
    assert not (poisoned := azure_stack.poison_counts()), poisoned


def check_every_function_initialises(app: App) -> None:
    listed = {f["name"]: f["trigger"] for f in app.client.get("/admin/functions").json()}
    expected = registered_functions()
    assert set(expected.values()) == {"httpTrigger", "queueTrigger", "timerTrigger", "cosmosDBTrigger"}
    assert listed == expected
    log = app.log()
    assert not errors_in(log), errors_in(log)
    # Every Cosmos DB trigger opened its container and lease; every queue trigger polls its queue.
    for name, trigger in expected.items():
        if trigger == "cosmosDBTrigger":  # "<function>: <database>/<container> from <the beginning|its lease>"
            wait_for(lambda n=name: re.search(rf"{n}: \S+/\S+ from ", app.log()), 30,
                     what=f"{name} reading its change feed")
        if trigger == "queueTrigger":
            assert f"queue {name}: " in log, name


def check_health(app: App) -> None:
    r = app.get("/health", anonymous=True)
    assert r.status_code == 200, r.text
    statuses = {name: dep["status"] for name, dep in r.json()["dependencies"].items()}
    assert {"redis", "tables", "cosmos"} <= set(statuses), statuses
    assert all(s in ("healthy", "degraded") for s in statuses.values()), statuses
    assert statuses["bindings"] == "healthy", statuses  # infra/ sets every setting a binding names


def check_a_caller_is_served(app: App, t: str, token: dict[str, str]) -> None:
    body = {"tenantId": t, "eventType": "RISK_CREATED", "source": "BACKEND_API", "action": "CREATE",
            "entityId": "api-1", "data": {"via": "http"}}
    r = app.post("/events", json=body, anonymous=True, headers=token)
    assert r.status_code == 201, r.text
    assert app.get(f"/events/{t}", anonymous=True).status_code == 401  # and nobody else is


def check_change_capture(app: App, env: dict[str, str], t: str, token: dict[str, str]) -> None:
    docs = documents(t)
    with CosmosClient(env["COSMOS_DB_ENDPOINT"], env["COSMOS_DB_KEY"], connection_verify=False,
                      enable_endpoint_discovery=False) as client:
        db = client.create_database_if_not_exists(env["COSMOS_DB_DATABASE"])
        for setting, doc in docs.items():
            db.create_container_if_not_exists(env[setting], PartitionKey("/tenantId")).upsert_item(doc)

    def captured() -> set[str] | None:
        r = app.get(f"/events/{t}", anonymous=True, headers=token, params={"source": "COSMOS_DB", "limit": 100})
        assert r.status_code == 200, r.text
        types = {e["event"]["eventType"] for e in r.json()["events"]}
        seen = {setting for setting, prefix in FAMILY.items() if any(x.startswith(prefix) for x in types)}
        return seen if seen == set(docs) else None

    wait_for(captured, 60, 0.5, "an event from every monitored container")
    for name, trigger in registered_functions().items():
        if trigger == "cosmosDBTrigger":
            succeeded(app, name)


def test_azd_up_without_the_audience_stops_at_provisioning() -> None:
    """A new user who sets nothing but the environment: azd asks for GRC_AUTH_AUDIENCE (and with
    --no-prompt the deployment stops) instead of deploying an app that refuses every caller."""
    from tests.system.bicep import BicepError

    with pytest.raises(BicepError, match="GRC_AUTH_AUDIENCE, which is not set: azd asks"):
        parameter_file(INFRA / "main.parameters.json", {"AZURE_ENV_NAME": "grc-dev", "AZURE_LOCATION": "westeurope"})
    # `az deployment` with the env file alone: the required parameter has no value.
    params = parameter_file(INFRA / "env" / "prod.parameters.json")
    with pytest.raises(BicepError, match="authAudience has no value and no default"):
        Scope(MAIN, params).param("authAudience")
    with pytest.raises(BicepError, match="minLength"):
        Scope(MAIN, {**params, "authAudience": ""}).param("authAudience")
