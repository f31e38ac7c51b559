"""The Bicep evaluator the deployment tests rely on, on small inputs: what it evaluates, and that
everything it cannot evaluate fails loudly instead of yielding a plausible value."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.system.bicep import INFRA, BicepError, Parser, Scope, arm_string, parameter_file, template

MODULE = """\
param name string
@allowed(['a', 'b'])
param mode string = 'a'
param secure bool = true
resource store 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
}
resource rule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = if (!secure) {
  parent: store
  name: 'send'
}
output name string = store.name
output endpoint string = store.properties.primaryEndpoints.queue
output ruleName string = secure ? '' : rule.name
"""

MAIN = """\
targetScope = 'subscription'
@minLength(1)
@description('it\\'s required')
param audience string
param flag bool = false
param items object = {
  one: 'x' // a comment
  two: 'y'
}
var token = toLower(uniqueString('sub', 'env'))
var settings = {
  // comment line
  PLAIN: 'v'
  INTERP: 'https://${token}.example/${endsWith(audience, '/') ? '' : '/'}x'
  NUMBER: string(10000)
  BOOL: string(flag)
  TERNARY: flag ? missingFunction() : 'lazy'
  'quoted-key': { a: 1, b: [1, 2] }
}
var loop = [for i in range(0, 2): i]
module child 'child.bicep' = {
  name: 'child'
  params: {
    name: 'st${token}'
    secure: !flag
  }
}
module off 'child.bicep' = if (flag) {
  name: 'off'
  params: {
    name: 'never'
  }
}
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "child.bicep").write_text(MODULE)
    (tmp_path / "main.bicep").write_text(MAIN)
    return tmp_path / "main.bicep"


def test_values_interpolation_and_lazy_ternary(files: Path) -> None:
    scope = Scope(files, {"audience": "api://x"})
    settings = scope.var("settings")
    token = scope.var("token")
    assert len(token) == 13 and token == token.lower()
    assert settings == {"PLAIN": "v", "INTERP": f"https://{token}.example//x", "NUMBER": "10000",
                        "BOOL": "False", "TERNARY": "lazy", "quoted-key": {"a": 1, "b": [1, 2]}}
    assert scope.param("items") == {"one": "x", "two": "y"}
    # The branch not taken is never evaluated; taken, the unknown function fails loudly.
    with pytest.raises(BicepError, match="missingFunction"):
        Scope(files, {"audience": "x", "flag": True}).var("settings")


def test_modules_outputs_and_stand_ins(files: Path) -> None:
    scope = Scope(files, {"audience": "x"})
    child = scope.module("child")
    assert child.output("name") == f"st{scope.var('token')}"
    assert child.output("ruleName") == ""
    assert scope.evaluate("child.outputs.name") == child.output("name")
    assert child.identity("rule") == ("Microsoft.EventHub/namespaces/authorizationRules",
                                      (child.output("name"), "send"))
    # A property Azure assigns at deployment has no value here ...
    with pytest.raises(BicepError, match="known only after deployment"):
        scope.evaluate("child.outputs.endpoint")
    # ... unless the caller names its stand-in.
    with_stand_in = Scope(files, {"audience": "x"}, stand_ins={"child.outputs.endpoint": "http://local/"})
    assert with_stand_in.evaluate("child.outputs.endpoint") == "http://local/"
    # Outputs of a module that is not deployed, a loop, an unknown name: all refused.
    with pytest.raises(BicepError, match="not deployed"):
        scope.evaluate("off.outputs.name")
    with pytest.raises(BicepError, match="loops"):
        scope.var("loop")
    with pytest.raises(BicepError, match="unknown name"):
        scope.evaluate("nowhere")
    # A conditional resource referenced while its condition is false is refused (ARM: NotFound).
    secured = Scope(files, {"audience": "x", "flag": True})
    with pytest.raises(BicepError, match="not deployed"):
        Scope(template(files.parent / "child.bicep"), {"name": "n"}).evaluate("rule.name")
    assert secured.deployed("off") and not scope.deployed("off")


def test_references_find_every_use_of_a_symbol(files: Path) -> None:
    child = Scope(files, {"audience": "x"}).module("child")
    assert {sym for sym, _ in child.references("store")} == {"rule", "output name", "output endpoint"}
    assert [sym for sym, _ in child.references("rule")] == ["output ruleName"]


def test_parameters_are_checked_like_arm_checks_them(files: Path) -> None:
    with pytest.raises(BicepError, match="no value and no default"):
        Scope(files, {}).param("audience")
    with pytest.raises(BicepError, match="minLength"):
        Scope(files, {"audience": ""}).param("audience")
    with pytest.raises(BicepError, match="not declared"):
        Scope(files, {"audience": "x", "typo": 1})
    with pytest.raises(BicepError, match=r"mode='c' not in"):
        Scope(files.parent / "child.bicep", {"name": "n", "mode": "c"}).param("mode")
    with pytest.raises(BicepError, match="bool"):
        Scope(files, {"audience": "x", "flag": "true"}).param("flag")


def test_arm_string_and_parser_details() -> None:
    assert (arm_string(True), arm_string(3), arm_string({"a": [1]})) == ("True", "3", '{"a":[1]}')
    scope = Scope(template(INFRA / "modules" / "roles.bicep"), {})
    assert scope.evaluate(r"'it\'s ${'a'}${1 + 2}\${x}'") == "it's a3${x}"
    assert scope.evaluate("!(1 == 2) && 3 >= 3 ? [1, 'b'] : null") == [1, "b"]
    with pytest.raises(BicepError, match="not a bool"):
        scope.evaluate("1 ? 2 : 3")
    with pytest.raises(BicepError):
        Parser("{ a: }").expression()


def test_every_infra_file_parses() -> None:
    files = sorted(INFRA.rglob("*.bicep"))
    assert len(files) >= 10
    for path in files:
        tpl = template(path)
        assert tpl.params or tpl.resources or tpl.modules, path
    main = template(INFRA / "main.bicep")
    assert "appSettings" in main.vars and "functionApp" in main.modules


def test_parameter_files_as_azd_substitutes_them(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"parameters": {
        "environmentName": {"value": "${AZURE_ENV_NAME}"},
        "usePrivateEndpoints": {"value": "${GRC_PRIVATE=false}"},
        "functionAlwaysReadyInstances": {"value": "${GRC_READY=0}"},
        "authIssuer": {"value": "${GRC_ISSUER=}"},
    }}))
    assert parameter_file(path, {"AZURE_ENV_NAME": "e1", "GRC_READY": "2"}, {"authAudience": "a"}) == {
        "environmentName": "e1", "usePrivateEndpoints": False, "functionAlwaysReadyInstances": 2,
        "authIssuer": "", "authAudience": "a"}
    with pytest.raises(BicepError, match="AZURE_ENV_NAME, which is not set: azd asks"):
        parameter_file(path, {})
    with pytest.raises(BicepError, match="needs azd"):
        parameter_file(path)
