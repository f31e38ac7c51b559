"""What a new user's `azd up` (and `azd down` + `azd up`) meets, checked by evaluating infra/ with
tests/system/bicep.py (no Bicep compiler runs here). Issue 17, items 2-7; item 1 is
tests/test_infra_existing.py, the settings starting the app tests/system/test_deployed_settings.py.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.core.settings import Settings
from tests.system.bicep import INFRA, AZD_VAR, Deployment, Scope, parameter_file, template
from tests.test_settings_inventory import HOST_SETTINGS_AZURE, HOST_SETTINGS_LOCAL

ROOT = INFRA.parent
MAIN = INFRA / "main.bicep"
README = (INFRA / "README.md").read_text()
REQUIRED = {"environmentName": "env1", "location": "westeurope", "authAudience": "api-client-id"}
AZD_ENV = {"AZURE_ENV_NAME": "env1", "AZURE_LOCATION": "westeurope", "GRC_AUTH_AUDIENCE": "api-client-id"}


def app_setting(scope: Scope, name: str) -> Any:
    """One entry of main.bicep's `appSettings`, evaluated alone (the others need deployed outputs)."""
    node = template(MAIN).vars["appSettings"]
    return scope.eval(next(value for key, value in node.a if key == name))


# ---- the walk-through: every variable documented, the required ones in the commands ------------
def readme_variables() -> dict[str, tuple[str, str]]:
    block = README.split("<!-- azd-variables:start -->", 1)[1].split("<!-- azd-variables:end -->", 1)[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2].strip("`"))
    return rows


def test_readme_lists_every_azd_variable_with_its_parameter_and_default() -> None:
    expected: dict[str, tuple[str, str]] = {}
    for name, entry in json.loads((INFRA / "main.parameters.json").read_text())["parameters"].items():
        m = AZD_VAR.match(str(entry["value"]))
        assert m, f"{name}: not an azd variable"
        default = m.group(2)
        expected[m.group(1)] = (name, "(none)" if default is None else default or "(empty)")
    assert readme_variables() == expected


def test_readme_walks_through_every_variable_that_must_be_set() -> None:
    required = [var for var, (_, default) in readme_variables().items() if default == "(none)"]
    assert set(required) == {"AZURE_ENV_NAME", "AZURE_LOCATION", "GRC_AUTH_AUDIENCE"}
    walkthrough = README.split("## Deploy", 1)[1].split("### The variables", 1)[0]
    assert "azd env new" in walkthrough  # sets AZURE_ENV_NAME
    for var in set(required) - {"AZURE_ENV_NAME"}:
        assert f"azd env set {var} " in walkthrough, var
    assert "azd up" in walkthrough
    # ... and what happens when one is not set: provisioning stops, with the parameter named.
    for name in required:
        param = readme_variables()[name][0]
        with pytest.raises(Exception, match=name):
            parameter_file(INFRA / "main.parameters.json", {k: v for k, v in AZD_ENV.items() if k != name})
        assert template(MAIN).params[param].default is None, param
    assert "authAudience=<client id>" in README  # the production command line


# ---- item 2: the issuer comes from the deploying tenant, the audience is required ---------------
def test_issuer_defaults_to_the_deploying_tenants_entra_v2_and_v1_issuers() -> None:
    d = Deployment()
    # v2.0 first: its OpenID configuration is where the signing keys are found (docs/security.md).
    expected = f"https://login.microsoftonline.com/{d.tenant_id}/v2.0,https://sts.windows.net/{d.tenant_id}/"
    assert app_setting(Scope(MAIN, REQUIRED), "AUTH_ISSUER") == expected
    # environment() without the trailing '/' (not every cloud's metadata has it) gives the same.
    bare = Deployment(login_endpoint="https://login.microsoftonline.com")
    assert app_setting(Scope(MAIN, REQUIRED, deployment=bare), "AUTH_ISSUER") == expected
    china = Deployment(login_endpoint="https://login.chinacloudapi.cn/")
    assert app_setting(Scope(MAIN, REQUIRED, deployment=china), "AUTH_ISSUER") == (
        f"https://login.chinacloudapi.cn/{d.tenant_id}/v2.0,https://sts.chinacloudapi.cn/{d.tenant_id}/")
    given = "https://sts.windows.net/t/,https://login.microsoftonline.com/t/v2.0"
    assert app_setting(Scope(MAIN, {**REQUIRED, "authIssuer": given}), "AUTH_ISSUER") == given
    assert app_setting(Scope(MAIN, REQUIRED), "AUTH_AUDIENCE") == "api-client-id"  # not a client ID: as given
    client_id = "6f1c1b9e-5d3a-4c1e-9a7b-0c0ffee0a0d1"
    assert app_setting(Scope(MAIN, {**REQUIRED, "authAudience": client_id}), "AUTH_AUDIENCE") == (
        f"{client_id},api://{client_id}")
    uri = "https://contoso.example/grc-api"
    assert app_setting(Scope(MAIN, {**REQUIRED, "authAudience": uri}), "AUTH_AUDIENCE") == uri
    decl = template(MAIN).params["authAudience"]
    assert decl.default is None and decl.decorators.get("minLength") == 1


# ---- item 3: Application Insights takes Entra ID authenticated telemetry only ---------------------
def test_app_insights_accepts_only_entra_id_telemetry() -> None:
    main = Scope(MAIN, REQUIRED)
    assert main.module("monitoring").property("appInsights", "properties", "DisableLocalAuth") is True
    # ... which works because the app and the host send with the identity, which may publish.
    assert app_setting(main, "APPLICATIONINSIGHTS_AUTHENTICATION_STRING") == "Authorization=AAD"
    roles = template(INFRA / "modules" / "roles.bicep")
    assert roles.resources["metricsPublisher"].condition is None
    assert "roles.monitoringMetricsPublisher" in (INFRA / "modules" / "roles.bicep").read_text()


# ---- item 4: azd down + azd up of the same environment gets a vault name that is free -------------
VAULT_NAME = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")  # 3-24, no "--"


def test_vault_name_is_salted_and_unchanged_without_salt() -> None:
    plain = Scope(MAIN, REQUIRED)
    token = plain.var("resourceToken")
    assert plain.module("keyvault").output("name") == f"kv-{token[:20]}"  # existing environments
    salted = {s: Scope(MAIN, {**REQUIRED, "keyVaultNameSalt": s}).module("keyvault").output("name")
              for s in ("20260101000000", "20260102000000")}
    names = {plain.var("keyVaultName"), *salted.values()}
    assert len(names) == 3 and all(VAULT_NAME.match(n) for n in names), names
    assert parameter_file(INFRA / "main.parameters.json", AZD_ENV)["keyVaultNameSalt"] == ""
    assert parameter_file(INFRA / "main.parameters.json", {**AZD_ENV, "GRC_KEYVAULT_SALT": "x"})["keyVaultNameSalt"] == "x"


def test_postdown_hook_sets_a_new_salt_for_the_environment(tmp_path: Path) -> None:
    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]["postdown"]
    assert hooks["windows"]["shell"] == "pwsh" and "GRC_KEYVAULT_SALT" in hooks["windows"]["run"]
    assert "$env:AZURE_ENV_NAME" in hooks["windows"]["run"]
    posix = hooks["posix"]
    assert posix["shell"] == "sh"
    # Run the posix hook with a stand-in `azd` that records its arguments.
    calls = tmp_path / "calls"
    fake = tmp_path / "azd"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "AZURE_ENV_NAME": "grc-dev"}
    subprocess.run(["sh", "-c", posix["run"]], env=env, check=True, timeout=30)
    (line,) = calls.read_text().splitlines()
    assert re.fullmatch(r"env set GRC_KEYVAULT_SALT \d{14} -e grc-dev", line), line


# ---- item 5: Redis high availability off for dev, as the cost table assumes ---------------------
def test_redis_high_availability_is_off_for_dev_and_on_for_prod() -> None:
    def ha(params: dict[str, Any]) -> str:
        return Scope(MAIN, params).module("redis").property("cluster", "properties", "highAvailability")

    assert ha(parameter_file(INFRA / "main.parameters.json", AZD_ENV)) == "Disabled"
    assert ha(parameter_file(INFRA / "env" / "dev.parameters.json", extra={"authAudience": "a"})) == "Disabled"
    assert ha(parameter_file(INFRA / "env" / "prod.parameters.json", extra={"authAudience": "a"})) == "Enabled"
    cost_row = next(line for line in README.split("## Cost", 1)[1].splitlines() if "Azure Managed Redis" in line)
    assert "high availability off" in cost_row


# ---- item 6: every setting name infra/ mentions is one the code reads ---------------------------
def test_setting_names_in_infra_are_real() -> None:
    main = template(MAIN)
    azd = {m.group(1) for e in json.loads((INFRA / "main.parameters.json").read_text())["parameters"].values()
           if (m := AZD_VAR.match(str(e["value"])))}
    known = (set(Settings.env_names()) | set(HOST_SETTINGS_AZURE) | set(HOST_SETTINGS_LOCAL) | azd
             | set(main.outputs) | {"SASL_SSL", "TLS1_2"})
    texts = {p.relative_to(ROOT): p.read_text() for p in [*INFRA.rglob("*.bicep"), *INFRA.glob("*.md")]}
    unknown = {(str(path), name) for path, text in texts.items()
               for name in re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", text)
               if name not in known and not name.startswith("CKV_")}
    assert not unknown, f"names that no code reads: {sorted(unknown)}"
    assert "EVENTHUBS_CONNECTION_STRING" in texts[Path("infra/modules/roles.bicep")]


# ---- item 7: one customer-managed key URL, whatever the vault URI looks like ---------------------
@pytest.mark.parametrize("vault_uri", ["https://cmk.vault.azure.net/", "https://cmk.vault.azure.net"])
def test_cmk_key_urls_do_not_depend_on_the_trailing_slash(vault_uri: str) -> None:
    main = Scope(MAIN, {**REQUIRED, "cmkKeyVaultUri": vault_uri, "cmkKeyName": "k",
                        "cmkUserAssignedIdentityId": "/subscriptions/s/id", "cmkRedisKeyVersion": "v1"})
    assert main.module("cosmos").property("account", "properties", "keyVaultKeyUri") == \
        "https://cmk.vault.azure.net/keys/k"
    redis = main.module("redis").property("cluster", "properties", "encryption", "customerManagedKeyEncryption")
    assert redis["keyEncryptionKeyUrl"] == "https://cmk.vault.azure.net/keys/k/v1"
    storage = main.module("storage").property("account", "properties", "encryption", "keyvaultproperties")
    assert storage == {"keyvaulturi": "https://cmk.vault.azure.net/", "keyname": "k"}


def test_the_alert_rule_and_the_workbook_count_the_same_minimum_of_deliveries_as_the_app() -> None:
    """The error-rate alert fires only over ERROR_RATE_MIN_DELIVERIES deliveries in the app's `alerts`
    block; the log alert rule and the workbook's line must use the same minimum (infra/alerts.md)."""
    from shared.observability.alerts import ERROR_RATE_MIN_DELIVERIES  # noqa: PLC0415

    for module in ("alerts.bicep", "workbook.bicep"):
        text = (INFRA / "modules" / module).read_text()
        found = re.search(r"^param errorRateMinDeliveries int = (\d+)$", text, re.MULTILINE)
        assert found and int(found.group(1)) == ERROR_RATE_MIN_DELIVERIES, module
    assert "errorRateMinDeliveries" not in (INFRA / "main.bicep").read_text()  # the modules' default holds
