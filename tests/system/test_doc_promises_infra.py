"""Promises of infra/README.md, infra/alerts.md and the deployment parts of README.md that no other
test proved, checked against infra/ as deployed.

No Bicep compiler and no Azure run here, so tests/system/bicep.py evaluates the templates (failing on
anything it cannot know). Where a value exists only after deployment (an endpoint, a vault URI) the
stand-in is written down in STAND_INS; where a declaration is a loop (the evaluator does not run
loops) its body is read as a syntax tree and only its literal parts and the names it refers to are
checked. The telemetry catalogue is read in a child process (this tier imports nothing of the app).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.system.bicep import INFRA, Node, Scope, parameter_file, template

ROOT = INFRA.parent
MAIN = INFRA / "main.bicep"
INFRA_README = (INFRA / "README.md").read_text()
ALERTS_MD = (INFRA / "alerts.md").read_text()
README = (ROOT / "README.md").read_text()

PAGE_TOKEN_KEY = "k" * 48
REQUIRED = {"environmentName": "env1", "location": "westeurope", "authAudience": "api-client-id",
            "pageTokenKey": PAGE_TOKEN_KEY}
AZD_ENV = {"AZURE_ENV_NAME": "env1", "AZURE_LOCATION": "westeurope", "GRC_AUTH_AUDIENCE": "api-client-id"}
VAULT = "https://kv-env1.vault.azure.net/"
# Module outputs Azure assigns at deployment -> a value of the same form.
STAND_INS = {
    "storage.outputs.queueEndpoint": "https://stenv1.queue.core.windows.net/",
    "cosmos.outputs.endpoint": "https://cosmos-env1.documents.azure.com:443/",
    "redis.outputs.hostName": "redis-env1.westeurope.redis.azure.net",
    "monitoring.outputs.appInsightsConnectionString":
        "InstrumentationKey=00000000-0000-0000-0000-000000000000",
    "monitoring.outputs.appInsightsId": "/subscriptions/s/resourceGroups/rg-env1/providers/"
                                        "Microsoft.Insights/components/appi-env1",
    "storage.outputs.id": "/subscriptions/s/resourceGroups/rg-env1/providers/Microsoft.Storage/"
                          "storageAccounts/stenv1",
    "keyvault.outputs.pageTokenKeySecretUri": f"{VAULT}secrets/page-token-key",
    "keyvault.outputs.redisPasswordSecretUri": f"{VAULT}secrets/redis-password",
    "keyvault.outputs.eventHubsConnectionSecretUri": f"{VAULT}secrets/eventhubs-connection-string",
    "network.outputs.functionSubnetId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/"
                                        "virtualNetworks/vnet/subnets/snet-function",
}


def main_scope(**params: Any) -> Scope:
    return with_redis_port(Scope(MAIN, {**REQUIRED, **params}, stand_ins=STAND_INS))


def with_redis_port(main: Scope) -> Scope:
    """redis.bicep's `port` output reads the database's deployed port: its declared value stands in."""
    main.stand_ins["redis.outputs.port"] = main.module("redis").property("database", "properties", "port")
    return main


def prod_params() -> dict[str, Any]:
    return parameter_file(INFRA / "env" / "prod.parameters.json",
                          extra={"authAudience": "api-client-id", "pageTokenKey": PAGE_TOKEN_KEY})


def settings(main: Scope) -> dict[str, str]:
    """main.bicep's appSettings, evaluated (the storage account's name is its own: st<token>)."""
    return main.var("appSettings")


# ---- syntax-tree helpers (loops and calls the evaluator does not run) ---------------------------
def at(node: Node | None, *path: str | int) -> Node:
    """The node at `path` in nested objects (str keys) and arrays (int indexes)."""
    for key in path:
        assert node is not None
        if isinstance(key, int):
            assert node.kind == "arr", (node.kind, key)
            node = node.a[key]
        else:
            assert node.kind == "obj", (node.kind, key)
            node = next((v for k, v in node.a if k == key), None)
            assert node is not None, f"no {key}"
    assert node is not None
    return node


def const(node: Node) -> Any:
    """A literal's value: strings without interpolation, numbers, booleans, arrays, objects."""
    if node.kind == "lit":
        return node.a
    if node.kind == "str":
        assert all(isinstance(p, str) for p in node.a), "interpolated string"
        return "".join(node.a)
    if node.kind == "arr":
        return [const(n) for n in node.a]
    if node.kind == "obj":
        return {k: const(v) for k, v in node.a}
    if node.kind == "unary" and node.a == "-":
        return -const(node.b)
    raise AssertionError(f"not a literal: {node.kind}")


def refs(node: Node) -> set[str]:
    return {n.a for n in node.walk() if n.kind == "ref"}


def dotted(node: Node) -> str:
    """`a.b.c` of a member chain (or a plain reference)."""
    if node.kind == "ref":
        return node.a
    assert node.kind == "member", node.kind
    return f"{dotted(node.a)}.{node.b}"


def loop_body(scope: Scope, symbol: str) -> tuple[Node, Node]:
    """(what a resource loop iterates over, its body)."""
    decl = scope.template.resources[symbol]
    assert decl.loop, symbol
    return decl.body.b[0], decl.body.c


def setting_node(name: str) -> Node:
    return next(v for k, v in template(MAIN).vars["appSettings"].a if k == name)


def sources(node: Node) -> set[str]:
    """The names an expression refers to, through main.bicep's vars."""
    found, todo = set(), list(refs(node))
    variables = template(MAIN).vars
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += refs(variables[name]) if name in variables else []
    return found


# ---- README.md: the settings table's Azure column ------------------------------------------------
def readme_setting_rows() -> dict[str, str]:
    block = README.split("<!-- settings:start -->", 1)[1].split("<!-- settings:end -->", 1)[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[2]
    return rows


# Rows whose Azure cell is prose: the value they describe, as deployed with the defaults.
PROSE = {
    "REDIS_HOST": STAND_INS["redis.outputs.hostName"],
    "REDIS_PASSWORD": "",  # "empty with Entra ID" (key auth: tests/test_infra_redis.py)
    "STORAGE_CONNECTION_STRING__queueServiceUri": STAND_INS["storage.outputs.queueEndpoint"],
    "COSMOS_DB_ENDPOINT": STAND_INS["cosmos.outputs.endpoint"],
    "COSMOS__accountEndpoint": STAND_INS["cosmos.outputs.endpoint"],
    "PAGE_TOKEN_KEY": f"@Microsoft.KeyVault(SecretUri={VAULT}secrets/page-token-key)",
    "KAFKA_DEFAULT_TOPIC": "grc-events",  # "first event hub (grc-events)"
    "EVENTHUBS_CONNECTION_STRING": "",  # "empty, or a Key Vault reference when SAS is enabled"
    "APPLICATIONINSIGHTS_CONNECTION_STRING": STAND_INS["monitoring.outputs.appInsightsConnectionString"],
}
ACCOUNT_NAME_ROWS = ("STORAGE_ACCOUNT_NAME", "AzureWebJobsStorage__accountName")  # "storage account name"


def test_readme_settings_table_azure_column_is_what_main_bicep_deploys() -> None:
    """README 'Settings': the column `Azure (infra/main.bicep)` of every row, against the evaluated
    appSettings with the defaults: a literal is the value, `param` (x) names the parameter the
    setting comes from and its default, `<namespace>` stands for a name, "not deployed" is absent."""
    main = main_scope()
    deployed = settings(main)
    params = template(MAIN).params
    checked, prose = 0, set()
    for name, cell in readme_setting_rows().items():
        if cell.startswith("not deployed"):
            assert name not in deployed, f"{name}: README says not deployed"
        elif ((m := re.fullmatch(r"`(\w+)`(?: parameter)?(?: \((.*)\))?(?:;.*)?", cell))
              and m.group(1) in params):
            assert m.group(1) in sources(setting_node(name)), f"{name} does not come from {m.group(1)}"
            default = m.group(2)
            if default and not default.startswith(("same", "required")):
                assert deployed[name].lower() == default.lower(), (name, deployed[name], cell)
        elif re.fullmatch(r"[^\s`()]+", cell):
            assert deployed[name] == cell, (name, deployed[name], cell)
        elif m := re.fullmatch(r"`([^`]+)`(?: \(.*\))?", cell):
            pattern = re.escape(m.group(1)).replace(re.escape("<namespace>"), r"[a-z0-9-]+")
            assert re.fullmatch(pattern, deployed[name]), (name, deployed[name], cell)
        elif m := re.fullmatch(r"([^\s`()]+) \(.*\)", cell):
            assert deployed[name] == m.group(1), (name, deployed[name], cell)
        elif name in ACCOUNT_NAME_ROWS:
            assert deployed[name] == main.module("storage").output("name") == f"st{main.var('resourceToken')}"
            prose.add(name)
        else:
            assert name in PROSE, f"{name}: no rule reads its Azure cell {cell!r}; add it to PROSE"
            assert deployed[name] == PROSE[name], (name, deployed[name], cell)
            prose.add(name)
        checked += 1
    assert prose == set(PROSE) | set(ACCOUNT_NAME_ROWS), sorted(set(PROSE) - prose)
    assert checked >= 80, checked
    # ... and no secret is handed to the app (infra/README.md, 'What the app's identity may do').
    secrets = {k: v for k, v in deployed.items()
               if re.search(r"AccountKey=|SharedAccessKey|Password=|sig=", v, re.IGNORECASE)}
    assert not secrets, secrets
    assert [k for k, v in deployed.items() if v.startswith("@Microsoft.KeyVault")] == ["PAGE_TOKEN_KEY"]
    connection_strings = {k for k, v in deployed.items() if "CONNECTION_STRING" in k.upper() and v}
    assert connection_strings == {"APPLICATIONINSIGHTS_CONNECTION_STRING",
                                  "STORAGE_CONNECTION_STRING__queueServiceUri"}  # a URI, no secret
    assert main.module("monitoring").property("appInsights", "properties", "DisableLocalAuth") is True


# ---- infra/README.md: the file table, names, the walk-through ------------------------------------
def test_subscription_scope_resource_group_and_names() -> None:
    """'main.bicep | subscription-scope entry point: resource group'; `azd env new grc-dev` -> rg-grc-dev;
    the workbook 'GRC event streaming operations (<environment>)' under `appi-<token>`; SERVICE_API_URI."""
    assert re.search(r"^targetScope = 'subscription'$", MAIN.read_text(), re.MULTILINE)
    main = Scope(MAIN, {**REQUIRED, "environmentName": "grc-dev"}, stand_ins=STAND_INS)
    assert main.template.resources["rg"].type == "Microsoft.Resources/resourceGroups"
    assert main.property("rg", "name") == "rg-grc-dev"
    assert Scope(MAIN, {**REQUIRED, "resourceGroupName": "rg-mine"}).property("rg", "name") == "rg-mine"
    token = main.var("resourceToken")
    assert main.module("monitoring").param("appInsightsName") == f"appi-{token}"
    assert main.module("workbook").param("displayName") == "GRC event streaming operations (grc-dev)"
    # Every module is deployed into that resource group.
    for sym, decl in main.template.modules.items():
        assert dotted(at(decl.body, "scope")) == "rg", sym
    out = main.template.outputs["SERVICE_API_URI"]
    assert out.kind == "str" and out.a[0] == "https://"
    assert dotted(out.a[1]) == "functionApp.outputs.defaultHostName"


def test_monitoring_is_a_workspace_and_a_workspace_based_app_insights() -> None:
    mon = main_scope().module("monitoring")
    assert mon.template.resources["workspace"].type == "Microsoft.OperationalInsights/workspaces"
    body = mon.template.resources["appInsights"].body
    assert dotted(at(body, "properties", "WorkspaceResourceId")) == "workspace.id"
    assert mon.property("appInsights", "properties", "IngestionMode") == "LogAnalytics"
    assert mon.property("appInsights", "properties", "DisableLocalAuth") is True


def test_storage_creates_host_storage_deployment_container_tables_and_queues_with_poison() -> None:
    """'storage account (host storage, Flex deployment container, tables, retry/vector/backfill queues and
    their poison queues)'."""
    main = main_scope()
    st = main.module("storage")
    calls = template(MAIN).modules["storage"].body
    for arg, param in (("tables", "storageTables"), ("queues", "storageQueues")):
        loop = at(calls, "params", arg)
        assert loop.kind == "for" and refs(loop.b[0]) == {param}, arg
        assert dotted(loop.c) == f"{loop.a[0]}.value", arg
    queues = main.param("storageQueues")
    deployed = settings(main)
    queue_settings = {deployed[k] for k in ("RETRY_QUEUE", "VECTOR_QUEUE", "BACKFILL_QUEUE")}
    assert queue_settings == set(queues.values())
    for sym, name in (("queueResources", None), ("poisonQueues", "-poison")):
        over, body = loop_body(st, sym)
        assert dotted(over) == "queues"
        n = at(body, "name")
        parts = n.a if n.kind == "str" else (n,)
        assert dotted(parts[0]) == "q" and (name is None or parts[1:] == (name,)), sym
    over, _ = loop_body(st, "tableResources")
    assert dotted(over) == "tables"
    assert set(main.param("storageTables").values()) == {
        deployed[k] for k in ("STREAM_CONFIG_TABLE", "ANALYTICS_TABLE", "DEADLETTER_TABLE", "AUDIT_TABLE",
                              "BACKFILL_TABLE")}
    assert st.property("deploymentContainer", "name") == main.var("deploymentContainerName")
    assert st.property("deploymentContainer", "properties", "publicAccess") == "None"
    assert deployed["AzureWebJobsStorage__accountName"] == st.output("name")
    # The file table and the identity's roles name every queue and table infra creates, and only those.
    row = next(line for line in INFRA_README.splitlines() if line.startswith("| `modules/storage.bicep`"))
    assert "/".join(queues) + " queues and their poison queues" in row, row
    roles = identity_table(column=2)
    assert all(q in roles["Storage Queue Data Contributor"] for q in queues)
    tables = [t.strip() for t in roles["Storage Table Data Contributor"].split(",")]
    words = [re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).lower() for key in main.param("storageTables")]
    assert len(tables) == len(words), (words, tables)
    assert all(w.rstrip("s") in t for w, t in zip(words, tables)), (words, tables)


def test_cosmos_keys_disabled_monitored_containers_and_lease_container() -> None:
    """'Cosmos DB for NoSQL account (keys disabled), database, monitored containers (`/tenantId`, TTL on
    with no default), lease container (`/id`)'."""
    main = main_scope()
    cosmos = main.module("cosmos")
    assert cosmos.property("account", "properties", "disableLocalAuth") is True
    assert cosmos.property("database", "name") == main.param("cosmosDatabaseName")
    over, body = loop_body(cosmos, "containers")
    assert dotted(over) == "containerNames"
    assert const(at(body, "properties", "resource", "partitionKey", "paths")) == ["/tenantId"]
    assert const(at(body, "properties", "resource", "defaultTtl")) == -1  # TTL on, no default expiry
    names = at(template(MAIN).modules["cosmos"].body, "params", "containerNames")
    assert names.kind == "for" and refs(names.b[0]) == {"cosmosContainers"} and dotted(names.c) == "c.value"
    assert cosmos.property("leaseContainer", "name") == main.param("cosmosLeaseContainerName") == "leases"
    assert cosmos.property("leaseContainer", "properties", "resource", "partitionKey", "paths") == ["/id"]


def test_event_hubs_kafka_tls_one_hub_per_topic_and_consumer_groups() -> None:
    """'Event Hubs namespace (Kafka endpoint, TLS 1.2), one event hub per topic, consumer groups'; and
    README 'Kafka / Event Hubs destination': the event hubs infra creates by default."""
    main = main_scope()
    eh = main.module("eventhubs")
    assert eh.property("namespace", "properties", "kafkaEnabled") is True
    assert eh.property("namespace", "properties", "minimumTlsVersion") == "1.2"
    over, body = loop_body(eh, "hubs")
    assert dotted(over) == "eventHubs" and dotted(at(body, "name")) == "hub.name"
    _, groups = loop_body(eh, "groups")
    assert {"eventHubs", "consumerGroups"} <= refs(at(groups, "name"))
    hubs = [h["name"] for h in main.param("eventHubs")]
    assert settings(main)["KAFKA_DEFAULT_TOPIC"] == hubs[0]
    sentence = re.search(r"infra provisions them: `eventHubs` in infra/main\.bicep, by default (.*?)\)",
                         " ".join(README.split()))
    assert sentence, "README no longer says which event hubs infra creates"
    assert re.findall(r"`([\w-]+)`", sentence.group(1)) == hubs, sentence.group(1)


def test_key_vault_rbac_soft_delete_purge_protection_and_its_secrets() -> None:
    """'Key Vault (RBAC, soft delete, purge protection) with `page-token-key`, the Redis database's access
    key (only with `redisEntraAuth: false`) and the Event Hubs connection string (only if SAS is enabled)';
    'Tear down': purge protection, 90-day retention."""
    for entra, no_sas in ((True, True), (False, False), (True, False), (False, True)):
        kv = main_scope(redisEntraAuth=entra, eventHubsDisableLocalAuth=no_sas).module("keyvault")
        props = kv.property("vault", "properties")
        assert props["enableRbacAuthorization"] is True and props["enableSoftDelete"] is True
        assert props["enablePurgeProtection"] is True and props["softDeleteRetentionInDays"] == 90
        assert kv.property("pageTokenKeySecret", "name") == "page-token-key"
        assert kv.deployed("pageTokenKeySecret")
        assert kv.property("pageTokenKeySecret", "properties", "value") == PAGE_TOKEN_KEY
        assert kv.deployed("redisPassword") is (not entra), (entra, no_sas)
        assert kv.deployed("eventHubsConnection") is (not no_sas), (entra, no_sas)
        assert kv.property("redisPassword", "name") == "redis-password"
        assert kv.property("eventHubsConnection", "name") == "eventhubs-connection-string"


def test_function_app_flex_consumption_python_identity_and_identity_based_deployment() -> None:
    """'Flex Consumption plan and Function App (Python 3.11, system-assigned identity, identity-based
    deployment storage)'; step 3: published through the SCM endpoint with Entra ID, basic-auth
    publishing off, the package in the Flex deployment container read with the app's identity."""
    main = main_scope()
    fa = main.module("functionApp")
    assert fa.property("plan", "sku") == {"tier": "FlexConsumption", "name": "FC1"}
    config = fa.template.resources["site"].prop("properties", "functionAppConfig")
    assert const(at(config, "runtime")) == {"name": "python", "version": "3.11"}
    assert fa.property("site", "identity") == {"type": "SystemAssigned"}
    storage = at(config, "deployment", "storage")
    assert const(at(storage, "type")) == "blobContainer"
    assert const(at(storage, "authentication")) == {"type": "SystemAssignedIdentity"}
    value = at(storage, "value")
    assert dotted(value.a[0]) == "storage.properties.primaryEndpoints.blob"
    assert dotted(value.a[1]) == "deploymentContainerName"
    assert fa.param("deploymentContainerName") == main.module("storage").param("deploymentContainerName")
    for policy in ("ftpPolicy", "scmPolicy"):
        assert fa.property(policy, "properties") == {"allow": False}, policy
    assert {fa.property(p, "name") for p in ("ftpPolicy", "scmPolicy")} == {"ftp", "scm"}
    assert fa.param("appSettings") == settings(main)


def test_azd_up_provisions_main_bicep_and_packages_the_repository_without_tests_and_infra() -> None:
    """Step 3: '`azd up` = `azd provision` (infra/main.bicep with infra/main.parameters.json) + `azd deploy`
    ... `.funcignore` keeps tests, infra and local tools out of the package'."""
    azure = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert azure["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert (INFRA / "main.parameters.json").is_file()  # azd reads <module>.parameters.json next to it
    ignored = set((ROOT / ".funcignore").read_text().split())
    assert {"tests/", "infra/", "localdev/", "devhost/", "bench/", "docs/", ".venv/"} <= ignored
    assert "function_app.py" not in ignored and "shared/" not in ignored


def test_page_token_key_is_generated_by_azd_and_never_in_a_file() -> None:
    """'Production': `pageTokenKey` (secure, never in a parameter file) ... azd generates it once
    (`@metadata` `generate`); alert e-mail receivers are an array azd cannot pass, set in the env files."""
    text = MAIN.read_text()
    decl = re.search(r"((?:^@.*\n)+)param pageTokenKey string$", text, re.MULTILINE)
    assert decl and "@secure()" in decl.group(1)
    assert re.search(r"@metadata\(\{ azd: \{ type: 'generate'", decl.group(1))
    files = [INFRA / "main.parameters.json", *sorted((INFRA / "env").glob("*.json"))]
    for path in files:
        assert "pageTokenKey" not in json.loads(path.read_text())["parameters"], path.name
    assert "alertEmailReceivers" not in json.loads(files[0].read_text())["parameters"]
    assert parameter_file(INFRA / "env" / "prod.parameters.json")["alertEmailReceivers"]
    receivers = at(template(MAIN).modules["alerts"].body, "params", "emailReceivers")
    assert refs(receivers) == {"alertEmailReceivers"}


def test_production_paragraph_mirrors_prod_parameters() -> None:
    """'Production: Either mirror env/prod.parameters.json into the azd environment (`azd env set ...`)':
    every value listed is the prod file's, and every prod value an azd variable can carry is listed."""
    section = INFRA_README.split("### Production", 1)[1].split("```", 1)[0]
    listed = dict(re.findall(r"`(?:azd env set )?(GRC_\w+) ([^`]+)`", section))
    mapping = {}
    for param, entry in json.loads((INFRA / "main.parameters.json").read_text())["parameters"].items():
        m = re.fullmatch(r"\$\{(\w+)(?:=(.*))?\}", entry["value"])
        assert m
        mapping[m.group(1)] = (param, m.group(2))
    prod = parameter_file(INFRA / "env" / "prod.parameters.json")
    azd_default = parameter_file(INFRA / "main.parameters.json", AZD_ENV)
    for var, value in listed.items():
        param = mapping[var][0]
        assert json.dumps(prod[param]).strip('"') == value, (var, value, prod[param])
    carried = {var for var, (param, default) in mapping.items()
               if default is not None and param in prod and prod[param] != azd_default[param]}
    assert carried <= set(listed), f"prod values an azd variable carries, not listed: {carried - set(listed)}"
    # ... and the prod values no azd variable can carry are named, to be added to main.parameters.json.
    defaults = Scope(MAIN, REQUIRED)
    azd_params = {param for param, _ in mapping.values()}
    others = {p for p, v in prod.items() if p not in azd_params and v != defaults.param(p)}
    named = set(re.findall(r"`(\w+)`", section.split("no azd variable", 1)[0].rsplit(";", 1)[1]))
    assert others == named, (others, named)


# ---- Roles --------------------------------------------------------------------------------------
# Azure built-in role definition ids (learn.microsoft.com, "Azure built-in roles").
BUILT_IN = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Azure Event Hubs Data Sender": "2b629674-e913-4c01-ae53-ef4638d8f975",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
SCOPE_TYPES = {"storage account": "Microsoft.Storage/storageAccounts",
               "Event Hubs namespace": "Microsoft.EventHub/namespaces",
               "Application Insights": "Microsoft.Insights/components"}


def identity_table(column: int = 1) -> dict[str, str]:
    """Role -> its Scope (column 1) or Why (column 2) in 'What the app's identity may do'."""
    section = INFRA_README.split("## What the app's identity may do", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("Role", "---"):
            rows[cells[0]] = cells[column]
    return rows


def role_assignments(roles: Scope) -> dict[str, tuple[str, str]]:
    """symbol -> (role definition id, scope symbol) of every Azure RBAC assignment in roles.bicep."""
    out = {}
    for sym, res in roles.template.resources.items():
        if res.type != "Microsoft.Authorization/roleAssignments":
            continue
        call = at(res.body, "properties", "roleDefinitionId")
        assert call.kind == "call" and call.a == "subscriptionResourceId", sym
        out[sym] = (roles.eval(call.b[1]), dotted(at(res.body, "scope")))
    return out


@pytest.mark.parametrize("entra,sas", [(True, False), (False, True)])
def test_the_app_identity_holds_exactly_the_documented_roles_on_the_documented_scopes(entra: bool,
                                                                                      sas: bool) -> None:
    """'What the app's identity may do (least privilege)': each row's role on its scope, the Key Vault
    role on single secrets (never the vault) under their conditions, Cosmos DB's data-plane role, the
    Redis `default` access policy with `redisEntraAuth`; and 'Roles the deployer needs': the six role
    definitions a constrained RBAC Administrator needs."""
    main = main_scope(redisEntraAuth=entra, eventHubsDisableLocalAuth=not sas)
    roles = main.module("roles")
    table = identity_table()
    assignments = role_assignments(roles)
    by_role: dict[str, list[str]] = {}
    for sym, (definition, scope) in assignments.items():
        name = next((n for n, guid in BUILT_IN.items() if guid == definition), None)
        assert name is not None and name in table, f"{sym}: role {definition} is not in the table"
        assert scope != "vault", f"{sym} is granted on the whole vault"
        if roles.deployed(sym):
            by_role.setdefault(name, []).append(scope)
    assert len({d for d, _ in assignments.values()}) == 6 and "six role definitions" in INFRA_README
    for role, scope_text in table.items():
        if role not in BUILT_IN:
            continue
        scopes = by_role.get(role, [])
        if role == "Key Vault Secrets User":
            secrets = {roles.property(s, "name") for s in scopes}
            expected = {"page-token-key"} | ({"redis-password"} if not entra else set()) | (
                {"eventhubs-connection-string"} if sas else set())
            assert secrets == expected and set(re.findall(r"`([\w-]+)`", scope_text)) >= expected, secrets
            types = {roles.template.resources[s].type for s in scopes}
            assert types == {"Microsoft.KeyVault/vaults/secrets"}, types
        else:
            [scope] = scopes
            assert roles.template.resources[scope].type == SCOPE_TYPES[scope_text], (role, scope)
    cosmos = roles.template.resources["cosmosData"]
    assert cosmos.type == "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
    # Cosmos DB Built-in Data Contributor, on the whole account.
    assert roles.var("cosmosDataContributor") == "00000000-0000-0000-0000-000000000002"
    assert dotted(at(cosmos.body, "properties", "scope")) == "cosmos.id"
    assert "Cosmos DB Built-in Data Contributor (data plane)" in table
    assert roles.deployed("redisAccess") is entra
    assert roles.property("redisAccess", "properties", "accessPolicyName") == "default"
    assert roles.property("redisDatabase", "name") == "default"


def test_deployer_contributor_covers_every_resource_provider_used() -> None:
    """'Contributor ... registers the resource providers on first use (Microsoft.Web, ...)'."""
    text = " ".join(INFRA_README.split())
    listed = re.search(r"registers the resource providers on first use \(([^)]*)\)", text)
    assert listed
    providers = {p.strip().lower() for p in listed.group(1).split(",")}
    used = {res.type.split("/")[0].lower() for path in INFRA.rglob("*.bicep")
            for res in template(path).resources.values()}
    assert used - {"microsoft.resources", "microsoft.authorization"} <= providers, used - providers
    assert "microsoft.app" in providers  # the Flex subnet delegation (Microsoft.App/environments)


# ---- Event Hubs auth, network, encryption -------------------------------------------------------
def test_event_hubs_oauth_by_default_and_sasl_plain_with_a_send_only_rule_in_key_vault() -> None:
    """'Event Hubs auth': by default no SAS keys and OAUTHBEARER; `eventHubsDisableLocalAuth: false` ->
    SASL PLAIN, a send-only SAS rule whose connection string Key Vault keeps, referenced by
    EVENTHUBS_CONNECTION_STRING."""
    default = main_scope()
    eh = default.module("eventhubs")
    assert eh.property("namespace", "properties", "disableLocalAuth") is True and not eh.deployed("sendRule")
    s = settings(default)
    assert (s["KAFKA_SECURITY"], s["EVENTHUBS_CONNECTION_STRING"]) == ("oauth", "")
    assert s["KAFKA_BROKER"] == f"{eh.output('name')}.servicebus.windows.net:9093"
    sas = main_scope(eventHubsDisableLocalAuth=False)
    eh = sas.module("eventhubs")
    assert eh.property("namespace", "properties", "disableLocalAuth") is False and eh.deployed("sendRule")
    assert eh.property("sendRule", "properties") == {"rights": ["Send"]}
    assert sas.module("keyvault").param("eventHubsSendRuleName") == eh.property("sendRule", "name")
    s = settings(sas)
    assert s["KAFKA_SECURITY"] == "sasl-plain"
    assert s["EVENTHUBS_CONNECTION_STRING"] == (
        f"@Microsoft.KeyVault(SecretUri={VAULT}secrets/eventhubs-connection-string)")
    out = sas.module("keyvault").template.outputs["eventHubsConnectionSecretUri"]
    assert out.c.a[-1] == "secrets/eventhubs-connection-string"  # the stand-in's form is the output's


DATA_SERVICES = {"storage": ("account", "publicNetworkAccess"), "cosmos": ("account", "publicNetworkAccess"),
                 "eventhubs": ("namespace", "publicNetworkAccess"),
                 "redis": ("cluster", "publicNetworkAccess"),
                 "keyvault": ("vault", "publicNetworkAccess")}


def test_default_network_public_endpoints_tls12_and_entra_id_only() -> None:
    """'Network, Default (dev)': every data service TLS 1.2+ and Entra ID only (storage shared keys off,
    Cosmos local auth off, Event Hubs SAS off, Redis access keys off, Key Vault RBAC); 'Encryption, in
    transit'."""
    main = main_scope()
    st, cosmos, eh = main.module("storage"), main.module("cosmos"), main.module("eventhubs")
    redis, kv, fa = main.module("redis"), main.module("keyvault"), main.module("functionApp")
    assert st.property("account", "properties", "allowSharedKeyAccess") is False
    assert st.property("account", "properties", "minimumTlsVersion") == "TLS1_2"
    assert st.property("account", "properties", "supportsHttpsTrafficOnly") is True
    assert cosmos.property("account", "properties", "disableLocalAuth") is True
    assert cosmos.property("account", "properties", "minimalTlsVersion") == "Tls12"
    assert eh.property("namespace", "properties", "disableLocalAuth") is True
    assert eh.property("namespace", "properties", "minimumTlsVersion") == "1.2"
    assert redis.property("database", "properties", "accessKeysAuthentication") == "Disabled"
    assert redis.property("cluster", "properties", "minimumTlsVersion") == "1.2"
    assert redis.property("database", "properties", "clientProtocol") == "Encrypted"
    assert kv.property("vault", "properties", "enableRbacAuthorization") is True
    site = fa.template.resources["site"].body
    assert const(at(site, "properties", "httpsOnly")) is True
    assert const(at(site, "properties", "siteConfig", "minTlsVersion")) == "1.2"
    assert const(at(site, "properties", "siteConfig", "scmMinTlsVersion")) == "1.2"
    for module, (sym, prop) in DATA_SERVICES.items():
        assert main.module(module).property(sym, "properties", prop) == "Enabled", module
    assert not main.deployed("network")
    # Without private endpoints, 'Disabled' is not applied: nothing could reach the services.
    alone = main_scope(publicNetworkAccess="Disabled")
    for module, (sym, prop) in DATA_SERVICES.items():
        assert alone.module(module).property(sym, "properties", prop) == "Enabled", module


def test_private_network_for_prod() -> None:
    """'Network, Private (prod)': a VNet with a private-endpoint subnet and a subnet delegated to
    Microsoft.App/environments, private endpoints and DNS zones for blob/queue/table, Cosmos DB, Event
    Hubs, Azure Managed Redis and Key Vault; the data services accept traffic only from the VNet; the
    HTTP API keeps its own switch, `apiPublicNetworkAccess` (default Enabled). Cost: 7 endpoints, 7 zones."""
    main = with_redis_port(Scope(MAIN, prod_params(), stand_ins=STAND_INS))
    assert main.deployed("network")
    for module, (sym, prop) in DATA_SERVICES.items():
        assert main.module(module).property(sym, "properties", prop) == "Disabled", module
    net = main.module("network")
    subnets = net.template.resources["vnet"].body
    function_subnet = at(subnets, "properties", "subnets", 1)
    assert const(at(function_subnet, "properties", "delegations")) == [
        {"name": "flex-consumption", "properties": {"serviceName": "Microsoft.App/environments"}}]
    targets = net.template.vars["targets"]
    keys = {const(at(t, "key")): const(at(t, "groupId")) for t in targets.a}
    assert keys == {"blob": "blob", "queue": "queue", "table": "table", "cosmos": "Sql",
                    "eventhubs": "namespace", "redis": "redisEnterprise", "keyvault": "vault"}
    for sym in ("zones", "endpoints", "zoneGroups"):
        assert dotted(loop_body(net, sym)[0]) == "targets", sym
    cost = next(line for line in INFRA_README.splitlines() if line.startswith("| Private endpoints"))
    assert f"{len(keys)} × ~ $7.30 + DNS zones {len(keys)} ×" in cost
    fa = main.module("functionApp")
    assert fa.param("virtualNetworkSubnetId") == STAND_INS["network.outputs.functionSubnetId"]
    api_default = const(template(MAIN).params["apiPublicNetworkAccess"].default)
    assert fa.param("publicNetworkAccess") == "Enabled" == api_default
    closed = main_scope(apiPublicNetworkAccess="Disabled").module("functionApp")
    assert closed.param("publicNetworkAccess") == "Disabled"


def test_encryption_at_rest_and_customer_managed_keys() -> None:
    """'Encryption, at rest': storage infrastructure (double) encryption on and CMK with the Key Vault key
    source; Cosmos DB CMK with `defaultIdentity`; Azure Managed Redis keeps Microsoft-managed keys unless
    `cmkRedisKeyVersion` is given too."""
    plain = main_scope()
    enc = plain.module("storage").property("account", "properties", "encryption")
    assert enc["requireInfrastructureEncryption"] is True and enc["keySource"] == "Microsoft.Storage"
    cmk = {"cmkKeyVaultUri": "https://cmk.vault.azure.net/", "cmkKeyName": "k",
           "cmkUserAssignedIdentityId": "/subscriptions/s/uai"}
    with_cmk = main_scope(**cmk)
    enc = with_cmk.module("storage").property("account", "properties", "encryption")
    assert enc["requireInfrastructureEncryption"] is True and enc["keySource"] == "Microsoft.Keyvault"
    assert enc["identity"] == {"userAssignedIdentity": "/subscriptions/s/uai"}
    assert with_cmk.module("cosmos").property("account", "properties", "defaultIdentity") == \
        "UserAssignedIdentity=/subscriptions/s/uai"
    no_version = with_cmk.module("redis").property("cluster", "properties", "encryption")
    assert no_version == {"customerManagedKeyEncryption": {}}  # Microsoft-managed keys
    versioned = main_scope(**cmk, cmkRedisKeyVersion="v1").module("redis")
    assert versioned.property("cluster", "properties", "encryption", "customerManagedKeyEncryption")[
        "keyEncryptionKeyUrl"] == "https://cmk.vault.azure.net/keys/k/v1"


def test_redis_diagnostics_and_public_access() -> None:
    """'Azure Managed Redis': cluster metrics (`AllMetrics`) and the database's `ConnectionEvents` log go to
    the Log Analytics workspace; public access follows `publicNetworkAccess`."""
    redis = main_scope().module("redis")
    cluster = redis.template.resources["clusterDiagnostics"].body
    database = redis.template.resources["databaseDiagnostics"].body
    assert dotted(at(cluster, "scope")) == "cluster" and dotted(at(database, "scope")) == "database"
    assert const(at(cluster, "properties", "metrics")) == [{"category": "AllMetrics", "enabled": True}]
    assert const(at(database, "properties", "logs")) == [{"category": "ConnectionEvents", "enabled": True}]
    for body in (cluster, database):
        assert refs(at(body, "properties", "workspaceId")) == {"workspaceId"}
    assert refs(at(template(MAIN).modules["redis"].body, "params", "workspaceId")) == {"monitoring"}


def test_dev_skus_of_the_cost_table() -> None:
    """'Cost (dev SKUs)': Flex Consumption 2 GB, Standard LRS, Cosmos DB Serverless, Event Hubs Standard
    1 TU, Balanced_B0, Key Vault Standard, 4 log alerts every 5 minutes; the prod notes' ZRS, autoscale
    4,000 RU/s, 2 TU, Balanced_B5 with HA, 1 always-ready instance."""
    dev = Scope(MAIN, parameter_file(INFRA / "main.parameters.json", AZD_ENV,
                                     extra={"pageTokenKey": PAGE_TOKEN_KEY}), stand_ins=STAND_INS)
    fa = dev.module("functionApp")
    assert fa.param("instanceMemoryMB") == 2048 and fa.param("alwaysReadyHttpInstances") == 0
    assert dev.module("storage").property("account", "sku") == {"name": "Standard_LRS"}
    capabilities = dev.module("cosmos").property("account", "properties", "capabilities")
    assert capabilities == [{"name": "EnableServerless"}]
    assert dev.module("eventhubs").property("namespace", "sku") == {"name": "Standard", "tier": "Standard",
                                                                      "capacity": 1}
    assert dev.module("redis").property("cluster", "sku") == {"name": "Balanced_B0"}
    assert dev.module("keyvault").property("vault", "properties", "sku") == {"family": "A",
                                                                              "name": "standard"}
    prod = Scope(MAIN, prod_params(), stand_ins=STAND_INS)
    assert prod.module("storage").property("account", "sku") == {"name": "Standard_ZRS"}
    assert prod.module("cosmos").property("database", "properties", "options") == {
        "autoscaleSettings": {"maxThroughput": 4000}}
    assert prod.module("eventhubs").property("namespace", "sku")["capacity"] == 2
    assert prod.module("redis").property("cluster", "sku") == {"name": "Balanced_B5"}
    assert prod.module("redis").property("cluster", "properties", "highAvailability") == "Enabled"
    assert prod.module("functionApp").param("alwaysReadyHttpInstances") == 1
    row = next(line for line in INFRA_README.splitlines() if line.startswith("| Alert rules"))
    assert f"{len(alert_rules(dev.module('alerts')))} log alerts, 5-min frequency" in row


def test_known_limits_search_openai_and_easy_auth_are_not_created() -> None:
    """'Known limits': Azure AI Search and Azure OpenAI are not created here (endpoints are parameters);
    App Service Authentication (Easy Auth) is not configured, the app validates tokens itself."""
    types = {res.type.lower() for path in INFRA.rglob("*.bicep") for res in template(path).resources.values()}
    assert not {t for t in types if t.startswith(("microsoft.search", "microsoft.cognitiveservices"))}, types
    fa = main_scope().module("functionApp")
    configs = [fa.property(s, "name") for s, r in fa.template.resources.items()
               if r.type == "Microsoft.Web/sites/config"]
    assert configs == ["appsettings"]  # no authsettingsV2
    s = settings(main_scope())
    assert s["AUTH_MODE"] == "jwt" and s["AZURE_SEARCH_ENDPOINT"] == "" and s["AZURE_OPENAI_ENDPOINT"] == ""
    with_search = settings(main_scope(searchEndpoint="https://s.search.windows.net",
                                      openAiEndpoint="https://o/"))
    assert (with_search["AZURE_SEARCH_ENDPOINT"], with_search["AZURE_OPENAI_ENDPOINT"]) == (
        "https://s.search.windows.net", "https://o/")


# ---- infra/alerts.md -----------------------------------------------------------------------------
def alert_rules(alerts: Scope) -> dict[str, dict[str, Any]]:
    """alerts.bicep's `rules`, each evaluated (json() -- Bicep's decimal -- read here as JSON)."""
    out = {}
    for obj in alerts.template.vars["rules"].a:
        rule = {}
        for key, node in obj.a:
            if node.kind == "call" and node.a == "json":
                rule[key] = json.loads(alerts.eval(node.b[0]))
            else:
                rule[key] = alerts.eval(node)
        out[rule["key"]] = rule
    return out


def md_table(text: str, header: str) -> list[list[str]]:
    lines = text.split(header, 1)[1].splitlines()
    rows = []
    for line in lines[1:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


RULE_KEYS = {"Error rate": "error-rate", "Processing delay": "processing-delay", "Memory": "memory",
             "Failing destination": "failing-destination"}


def test_alert_rules_table_is_what_alerts_bicep_deploys() -> None:
    """infra/alerts.md 'Rules' (and README 'GET /metrics/{tenantId}'): one action group with the
    e-mail receivers and the common alert schema; four log alerts over `customMetrics` on the
    Application Insights resource, every 5 minutes over 5 minutes, firing on one breaching evaluation
    and resolving themselves; per row the metrics, the split, the measure, the condition, the severity."""
    main = main_scope()
    alerts = main.module("alerts")
    assert alerts.param("appInsightsId") == STAND_INS["monitoring.outputs.appInsightsId"]
    res = alerts.template.resources
    assert [r.type for r in res.values()] == ["Microsoft.Insights/actionGroups",
                                              "Microsoft.Insights/scheduledQueryRules"]
    assert not res["actionGroup"].loop
    receivers = at(res["actionGroup"].body, "properties", "emailReceivers")
    assert receivers.kind == "for" and dotted(receivers.b[0]) == "emailReceivers"
    assert const(at(receivers.c, "useCommonAlertSchema")) is True
    over, body = loop_body(alerts, "alertRules")
    assert dotted(over) == "rules"
    assert const(at(body, "kind")) == "LogAlert"
    props = at(body, "properties")
    assert (const(at(props, "evaluationFrequency")), const(at(props, "windowSize"))) == ("PT5M", "PT5M")
    assert const(at(props, "autoMitigate")) is True and const(at(props, "enabled")) is True
    assert [dotted(n) for n in at(props, "scopes").a] == ["appInsightsId"]
    criterion = at(props, "criteria", "allOf", 0)
    assert const(at(criterion, "failingPeriods")) == {"numberOfEvaluationPeriods": 1,
                                                      "minFailingPeriodsToAlert": 1}
    for field, source in (("query", "rule.query"), ("metricMeasureColumn", "rule.measure"),
                          ("operator", "rule.operator"), ("threshold", "rule.threshold")):
        assert dotted(at(criterion, field)) == source, field
    assert dotted(at(criterion, "dimensions").b[0]) == "rule.dimensions"
    assert "Every rule evaluates every 5 minutes over the last 5 minutes" in ALERTS_MD

    rules = alert_rules(alerts)
    rows = md_table(ALERTS_MD, "| Alert |")
    assert {RULE_KEYS[r[0]] for r in rows} == set(rules) and len(rules) == 4
    for name, metrics, split, measure, condition, severity in rows:
        rule = rules[RULE_KEYS[name]]
        query = rule["query"]
        assert query.lstrip().startswith(("customMetrics", "let health = customMetrics")), name
        named = set(re.findall(r"`(grc\.[\w.]+)`", metrics))
        assert set(re.findall(r'"(grc\.[\w.]+)"', query)) == named, name
        dims = [d.strip("`") for d in re.findall(r"`\w+`", split)]
        if dims == ["cloud_RoleInstance"]:
            assert rule["dimensions"] == ["instance"] and "by instance = cloud_RoleInstance" in query
        else:
            assert rule["dimensions"] == dims, name
        for agg in re.findall(r"(?:max|min)\(value(?:Max|Min)\)", measure):
            assert agg in query, (name, agg)
        if "min(healthy.valueMin)" in measure:
            assert "min(valueMin)" in query
        assert rule["measure"] in query and rule["operator"] == "GreaterThan" and condition.startswith(">")
        number = re.match(r">\s*\**([\d][\d .]*)", condition)
        assert number and rule["threshold"] == float(number.group(1).replace(" ", "")), (name, condition)
        assert rule["severity"] == int(severity), name
    assert "| where total >= 20" in rules["error-rate"]["query"]
    assert "failed > 0 and succeeded == 0" in rules["failing-destination"]["query"]
    assert "healthy == 0" in rules["failing-destination"]["query"]


@pytest.mark.parametrize("given", [{}, {"alertErrorRate": "0.1", "alertDelaySeconds": 45,
                                        "alertMemoryPercent": 90}])
def test_alert_thresholds_are_the_parameters_and_the_app_settings(given: dict[str, Any]) -> None:
    """infra/alerts.md: 'Thresholds come from main.bicep parameters alertErrorRate ('0.05'),
    alertDelaySeconds (30) and alertMemoryPercent (80), which also set the app's ALERT_*; alerts.bicep
    adds errorRateMinDeliveries (20)'."""
    defaults = dict(re.findall(r"`(alert\w+)` \((\S+?)\)", ALERTS_MD))
    assert defaults == {"alertErrorRate": "'0.05'", "alertDelaySeconds": "30", "alertMemoryPercent": "80"}
    params = template(MAIN).params
    for name, value in defaults.items():
        expected = value.strip("'") if value.startswith("'") else int(value)
        assert const(params[name].default) == expected, name
    main = main_scope(**given)
    rules = alert_rules(main.module("alerts"))
    s = settings(main)
    rate, delay, memory = (main.param(n)
                           for n in ("alertErrorRate", "alertDelaySeconds", "alertMemoryPercent"))
    assert rules["error-rate"]["threshold"] == float(rate) == float(s["ALERT_ERROR_RATE"])
    assert rules["processing-delay"]["threshold"] == delay * 1000 and s["ALERT_DELAY_SECONDS"] == str(delay)
    assert rules["memory"]["threshold"] == memory and s["ALERT_MEMORY_PERCENT"] == str(memory)
    assert main.module("alerts").param("errorRateMinDeliveries") == 20
    assert "`errorRateMinDeliveries` (20)" in ALERTS_MD
    # 'a parameter of alerts.bicep only (main.bicep does not pass it)', the workbook's guard the same.
    passed = {key for key, _ in at(template(MAIN).modules["alerts"].body, "params").a}
    assert "errorRateMinDeliveries" not in passed and "main.bicep` does not pass it" in ALERTS_MD
    assert main.module("workbook").param("errorRateMinDeliveries") == 20


def test_alerts_md_metric_table_is_the_telemetry_catalogue() -> None:
    """infra/alerts.md 'Metrics the service emits': names exact, each with the listed dimensions and kind
    -- against the code's catalogue, read in a child process."""
    code = ("import json; from shared.observability.telemetry.catalogue import METRICS; "
            "print(json.dumps({n: [s.kind, list(s.dims)] for n, s in METRICS.items()}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    catalogue = json.loads(out.stdout)
    table = {}
    for metric, kind, dims, _used in md_table(ALERTS_MD, "| Metric | Kind |"):
        names = [d.strip() for d in dims.split(",")] if re.fullmatch(r"[\w, ]+", dims) else []
        table[metric.strip("`")] = [kind.split()[0].rstrip(","), names]
    assert table == catalogue


def test_every_path_the_infra_docs_cite_exists() -> None:
    """The files and modules infra/README.md and infra/alerts.md point readers (and checks) at exist:
    `shared/storage/redisconn.tenant_key` is the module shared/storage/redisconn.py."""
    cited = set()
    for text in (INFRA_README, ALERTS_MD):
        cited |= set(re.findall(r"\b((?:shared|tests|docs|infra|modules|workbooks|env)/[\w/.-]*\w)", text))
    assert len(cited) >= 10, cited
    missing = []
    for path in sorted(cited):
        candidates = [ROOT / path, INFRA / path, ROOT / (path.rsplit(".", 1)[0] + ".py")]
        if not any(c.exists() for c in candidates):
            missing.append(path)
    assert not missing, missing


# ---- the workbook: what it shows -----------------------------------------------------------------
def test_the_workbook_shows_what_infra_readme_lists() -> None:
    """'The operations workbook, What it shows': the items test_infra_workbook.py does not name: the
    per-tenant table (rates, failed, error rate, latency p50/p95/p99); per destination delivered, failed,
    parked and dead-lettered; the retry queue and its poison queue now (ARM, approximateMessageCount) and
    over time (grc.retryqueue.messages / poison_messages); error log lines grouped by tenant, destination
    and error type."""
    wb = json.loads(main_scope().module("workbook").var("serializedData"))

    def walk(items: list[dict[str, Any]]) -> Any:
        for item in items:
            yield item
            if item["type"] == 12:
                yield from walk(item["content"]["items"])

    items = {i["name"]: i["content"] for i in walk(wb["items"]) if i["type"] == 3}
    tenants = items["tenants"]
    assert tenants["visualization"] == "table"
    assert "percentilesw_array(mean, valueCount, 50, 95, 99)" in tenants["query"]
    assert "grc.deliveries.failed" in tenants["query"] and "grc.events.accepted" in tenants["query"]
    dest = items["destinations"]["query"]
    project = dest.rsplit("| project", 1)[1]
    for column in ("destination", "delivered", "failed", "parked", "deadLettered"):
        assert re.search(rf"\b{column}\b", project), column
    for item in ("retry-queue", "retry-poison"):
        assert items[item]["queryType"] == 12 and "approximateMessageCount" in json.dumps(items[item]), item
    history = items["retry-queue-history"]["query"]
    assert '"grc.retryqueue.messages"' in history and '"grc.retryqueue.poison_messages"' in history
    failures = items["failures"]["query"]
    assert failures.startswith("traces") and "severityLevel >= 3" in failures
    assert re.search(r"summarize .* by tenantId, destination, errorType", failures)
