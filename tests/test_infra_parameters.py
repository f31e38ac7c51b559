"""Wiring checks for infra/ that a Bicep compiler would do and checkov does not (none runs here):
parameter files name only declared parameters with allowed values and the right JSON types,
main.bicep passes every required module parameter and no unknown one, every module output it
reads exists, and azure.yaml points azd at the Function App.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
PARAM_FILES = [INFRA / "main.parameters.json", INFRA / "env" / "dev.parameters.json", INFRA / "env" / "prod.parameters.json"]

PARAM = re.compile(r"^param (\w+) (\w+)(\s*=.*)?$")
ALLOWED = re.compile(r"^@allowed\(\[(.*)\]\)$")
MODULE = re.compile(r"^module (\w+) '([^']+)' = ")
OUTPUT = re.compile(r"^output (\w+) ")
OUTPUT_USE = re.compile(r"\b(\w+)\.outputs\.(\w+)")
AZD_VAR = re.compile(r"^\$\{(\w+)(?:=(.*))?\}$")
JSON_TYPES = {"string": str, "int": int, "bool": bool, "array": list, "object": dict}
# Required parameters no committed file can hold, because they belong to the deployer's Entra ID tenant:
# the env files leave them to the command line (`--parameters authAudience=...`, infra/README.md), and
# main.parameters.json maps each to an azd variable without a default, so azd asks for it (or fails
# with --no-prompt) instead of deploying an app that refuses every caller.
PER_TENANT = {"authAudience": "GRC_AUTH_AUDIENCE"}


@dataclass
class Param:
    type: str
    has_default: bool
    allowed: list[object] = field(default_factory=list)
    secure: bool = False


def bicep_params(text: str) -> dict[str, Param]:
    params: dict[str, Param] = {}
    allowed: list[object] = []
    secure = False
    for line in text.splitlines():
        if m := ALLOWED.match(line.strip()):
            allowed = json.loads("[" + m.group(1).replace("'", '"') + "]")
        elif line.strip() == "@secure()":
            secure = True
        elif m := PARAM.match(line):
            params[m.group(1)] = Param(m.group(2), m.group(3) is not None, allowed, secure)
            allowed, secure = [], False
        elif line and not line.startswith("@"):
            allowed, secure = [], False
    return params


def module_calls(text: str) -> dict[str, tuple[str, set[str]]]:
    """symbol -> (module path, parameter names passed in its `params: {...}` block)."""
    calls: dict[str, tuple[str, set[str]]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if m := MODULE.match(line):
            j = next(k for k in range(i, len(lines)) if lines[k] == "  params: {")
            names = set()
            for body in lines[j + 1:]:
                if body == "  }":
                    break
                if km := re.match(r"^    (\w+):", body):
                    names.add(km.group(1))
            calls[m.group(1)] = (m.group(2), names)
    return calls


def outputs(text: str) -> set[str]:
    return {m.group(1) for line in text.splitlines() if (m := OUTPUT.match(line))}


MAIN_TEXT = MAIN.read_text()
MAIN_PARAMS = bicep_params(MAIN_TEXT)


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name if p.parent.name == "infra" else f"env/{p.name}")
def test_parameter_file_matches_main_bicep(path: Path) -> None:
    values = json.loads(path.read_text())["parameters"]
    unknown = set(values) - set(MAIN_PARAMS)
    assert not unknown, f"{path.name}: parameters main.bicep does not declare: {sorted(unknown)}"
    # Secure parameters are never written in a file: azd generates them (metadata `generate`) or
    # they are passed at deployment (`--parameters name=...`).
    secure = {name for name, p in MAIN_PARAMS.items() if p.secure}
    assert not secure & set(values), f"{path.name}: secrets in a parameter file: {sorted(secure & set(values))}"
    required = {name for name, p in MAIN_PARAMS.items() if not p.has_default and not p.secure}
    if path.name != "main.parameters.json":
        assert not set(PER_TENANT) & set(values), f"{path.name}: {sorted(PER_TENANT)} belong on the command line"
        required -= set(PER_TENANT)
    assert required <= set(values), f"{path.name}: missing required {sorted(required - set(values))}"
    for name, entry in values.items():
        param, value = MAIN_PARAMS[name], entry["value"]
        if isinstance(value, str) and (m := AZD_VAR.match(value)):
            # azd substitutes ${VAR=default}; check the default when the parameter is constrained.
            if param.allowed and m.group(2) is not None:
                default = int(m.group(2)) if param.type == "int" else m.group(2)
                assert default in param.allowed, f"{path.name}: {name} default {default!r} not allowed"
            continue
        assert isinstance(value, JSON_TYPES[param.type]), f"{path.name}: {name} should be {param.type}"
        if param.allowed:
            assert value in param.allowed, f"{path.name}: {name}={value!r} not in {param.allowed}"


def test_main_parameters_use_azd_environment() -> None:
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"
    for name, variable in PER_TENANT.items():
        assert not MAIN_PARAMS[name].has_default, f"{name} must stay required (no default)"
        assert values[name]["value"] == "${%s}" % variable, f"{name}: no default after the azd variable"


def test_prod_is_private_and_redundant() -> None:
    prod = {k: v["value"] for k, v in json.loads(PARAM_FILES[2].read_text())["parameters"].items()}
    assert prod["publicNetworkAccess"] == "Disabled" and prod["usePrivateEndpoints"] is True
    assert prod["storageSku"] != "Standard_LRS" and prod["functionZoneRedundant"] is True
    assert prod["alertEmailReceivers"], "prod alerts need a receiver"


def test_modules_get_every_required_parameter_and_no_unknown_one() -> None:
    calls = module_calls(MAIN_TEXT)
    assert len(calls) >= 10
    for symbol, (rel, passed) in calls.items():
        declared = bicep_params((INFRA / rel).read_text())
        required = {n for n, p in declared.items() if not p.has_default}
        assert not passed - set(declared), f"{symbol}: unknown params {sorted(passed - set(declared))}"
        assert not required - passed, f"{symbol}: missing params {sorted(required - passed)}"


def test_every_module_output_read_exists() -> None:
    calls = module_calls(MAIN_TEXT)
    module_outputs = {s: outputs((INFRA / rel).read_text()) for s, (rel, _) in calls.items()}
    for symbol, name in OUTPUT_USE.findall(MAIN_TEXT):
        assert symbol in module_outputs, f"{symbol} is not a module"
        assert name in module_outputs[symbol], f"{symbol} has no output {name}"


def test_azure_yaml_deploys_the_function_app() -> None:
    text = (ROOT / "azure.yaml").read_text()
    service = text.split("services:", 1)[1]
    for line in ("  api:", "    project: .", "    language: python", "    host: function"):
        assert f"\n{line}\n" in f"\n{service}\n", f"azure.yaml lacks {line.strip()!r}"
    # azd finds the deployment target by this tag on the site.
    assert "'azd-service-name': 'api'" in (INFRA / "modules" / "functionapp.bicep").read_text()


def test_parsers_on_small_inputs() -> None:
    text = "@allowed(['A', 'B'])\nparam x string = 'A'\nparam y int\n@secure()\n@description('k')\nparam z string\n"
    assert bicep_params(text) == {"x": Param("string", True, ["A", "B"]), "y": Param("int", False, []),
                                  "z": Param("string", False, [], True)}
    calls = module_calls("module m 'modules/x.bicep' = {\n  name: 'm'\n  params: {\n    a: 1\n    b: c.outputs.d\n  }\n}\n")
    assert calls == {"m": ("modules/x.bicep", {"a", "b"})}
