"""Every setting the code reads is deployed (infra/), sampled (local.settings.sample.json) and
documented (README.md's settings table), and none of the three lists a name nobody reads.

"Settings the code reads" = `Settings.env_names()` (shared/core/settings.py) plus the explicit lists of
host/binding settings below. A failure message names each missing or stale setting and where.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import function_app  # noqa: F401 - importing it is what makes its bindings name their settings
from shared.core import bindings
from shared.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MAIN_BICEP = ROOT / "infra" / "main.bicep"
SAMPLE = ROOT / "local.settings.sample.json"
README = ROOT / "README.md"

# Read by the Functions host or by a binding in Azure, not through shared.core.settings.
HOST_SETTINGS_AZURE: dict[str, str] = {
    # Host storage with the managed identity (Flex Consumption, no connection string).
    "AzureWebJobsStorage__accountName": "host storage account",
    # Host telemetry; the telemetry module may also read it through Settings.
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Application Insights",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra ID ingestion (Authorization=AAD)",
    # Cosmos DB triggers, connection "COSMOS", identity-based: <connection>__accountEndpoint.
    "COSMOS__accountEndpoint": "Cosmos DB trigger connection",
    # Queue triggers, connection "STORAGE_CONNECTION_STRING" (a connection string locally).
    "STORAGE_CONNECTION_STRING__queueServiceUri": "queue trigger connection",
}

# Read by the host locally (func start / the local runner), never deployed.
HOST_SETTINGS_LOCAL: dict[str, str] = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true (Azurite)",
    # Flex Consumption sets the runtime in functionAppConfig and rejects this app setting.
    "FUNCTIONS_WORKER_RUNTIME": "python",
    # Cosmos DB trigger connection string for the local Cosmos server.
    "COSMOS": "Cosmos DB trigger connection",
}

# Read by shared.core.settings but deliberately not deployed: local stand-ins for what the managed
# identity does in Azure, and development-only keys.
LOCAL_ONLY: frozenset[str] = frozenset({
    "PORT",  # the local runner's port; the Functions host owns the port in Azure
    "STORAGE_CONNECTION_STRING",  # Azure: STORAGE_ACCOUNT_NAME + managed identity
    "COSMOS_DB_KEY",  # Azure: Entra ID (the account has local auth disabled)
    "AUTH_DEV_SIGNING_KEY",  # local token signing for tests and the local runner
    "AZURE_CLIENT_ID",  # only for a user-assigned identity; the app uses its system-assigned one
    "AZURE_SEARCH_API_KEY",  # Azure: managed identity (Search Index Data Contributor)
    "AZURE_OPENAI_API_KEY",  # Azure: managed identity (Cognitive Services OpenAI User)
    "VECTOR_SQLITE_PATH",  # local sqlite-vec index
    "LOCAL_TOKENIZER_PATH",  # local embedding model
})

SETTING_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")
TABLE_NAME = re.compile(r"^\|\s*`([^`]+)`\s*\|")
BINDING_EXPRESSION = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")


def bicep_app_settings(text: str) -> set[str]:
    """Names in the `appSettings` object between `// settings:start` and `// settings:end`."""
    if "// settings:start" not in text or "// settings:end" not in text:
        raise AssertionError("infra/main.bicep lacks the // settings:start / // settings:end markers")
    block = text.split("// settings:start", 1)[1].split("// settings:end", 1)[0]
    assert "var appSettings = {" in block, "the marked block must hold `var appSettings = {...}`"
    body = block.split("var appSettings = {", 1)[1]
    names = set()
    for line in body.splitlines():
        if line.strip().startswith("//"):
            continue
        match = SETTING_LINE.match(line)
        if match:
            names.add(match.group(1))
    return names


def readme_table_settings(text: str) -> set[str]:
    """First-column names (in backticks) of the markdown table between the settings markers."""
    if "<!-- settings:start -->" not in text or "<!-- settings:end -->" not in text:
        raise AssertionError("README.md lacks the <!-- settings:start --> / <!-- settings:end --> markers")
    block = text.split("<!-- settings:start -->", 1)[1].split("<!-- settings:end -->", 1)[0]
    return {m.group(1) for line in block.splitlines() if (m := TABLE_NAME.match(line.strip()))}


def binding_settings() -> tuple[set[str], set[str]]:
    """`%NAME%` binding expressions and trigger connections function_app.py names (core/bindings.py)."""
    named = bindings.names()
    return {n for n, k in named.items() if k == "setting"}, {n for n, k in named.items() if k == "connection"}


def code_settings() -> set[str]:
    names = set(Settings.env_names())
    names |= binding_settings()[0]
    return names


def diff_message(where: str, missing: set[str], stale: set[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing from {where}: {sorted(missing)}")
    if stale:
        parts.append(f"stale in {where} (nothing reads them): {sorted(stale)}")
    return "; ".join(parts)


def test_infra_sets_every_setting_and_nothing_stale() -> None:
    deployed = bicep_app_settings(MAIN_BICEP.read_text())
    required = (code_settings() - LOCAL_ONLY) | set(HOST_SETTINGS_AZURE)
    leaked = deployed & (LOCAL_ONLY | set(HOST_SETTINGS_LOCAL))
    assert not leaked, f"local-only settings deployed by infra/: {sorted(leaked)}"
    message = diff_message("infra/main.bicep appSettings", required - deployed, deployed - required)
    assert not message, message


def test_local_settings_sample_lists_every_setting_and_nothing_stale() -> None:
    assert SAMPLE.exists(), "local.settings.sample.json is missing"
    values = set(json.loads(SAMPLE.read_text()).get("Values", {}))
    required = code_settings() | set(HOST_SETTINGS_LOCAL)
    message = diff_message("local.settings.sample.json Values", required - values, values - required)
    assert not message, message


def test_readme_table_documents_every_setting_and_nothing_stale() -> None:
    assert README.exists(), "README.md is missing"
    documented = readme_table_settings(README.read_text())
    required = code_settings() | set(HOST_SETTINGS_AZURE) | set(HOST_SETTINGS_LOCAL)
    message = diff_message("README.md settings table", required - documented, documented - required)
    assert not message, message


def test_every_binding_connection_has_host_settings() -> None:
    """A trigger's connection X needs X locally and X__<property> in Azure (identity-based)."""
    connections = binding_settings()[1]
    assert connections == {"STORAGE_CONNECTION_STRING", "COSMOS"}, connections
    local = set(Settings.env_names()) | set(HOST_SETTINGS_LOCAL)
    for name in connections:
        assert name in local, f"connection {name!r} has no local setting"
        assert any(s.startswith(f"{name}__") for s in HOST_SETTINGS_AZURE), (
            f"connection {name!r} has no identity-based setting ({name}__...) in HOST_SETTINGS_AZURE"
        )


# The parsers themselves, on small inputs, so a format change cannot make the checks vacuous.
def test_bicep_parser_reads_only_the_marked_object() -> None:
    text = (
        "var other = {\n  NOT_THIS: 'x'\n}\n// settings:start\nvar appSettings = {\n"
        "  // comment: IGNORED\n  LOG_LEVEL: logLevel\n  COSMOS__accountEndpoint: cosmos.outputs.endpoint\n"
        "}\n// settings:end\n"
    )
    assert bicep_app_settings(text) == {"LOG_LEVEL", "COSMOS__accountEndpoint"}
    with pytest.raises(AssertionError):
        bicep_app_settings("var appSettings = {\n  LOG_LEVEL: 'x'\n}\n")


def test_readme_parser_needs_markers_and_reads_first_column() -> None:
    text = (
        "| `OUTSIDE` | x |\n<!-- settings:start -->\n| Setting | Meaning |\n|---|---|\n"
        "| `LOG_LEVEL` | log level |\n| `REDIS_HOST` | host |\n<!-- settings:end -->\n"
    )
    assert readme_table_settings(text) == {"LOG_LEVEL", "REDIS_HOST"}
    with pytest.raises(AssertionError):
        readme_table_settings("| `LOG_LEVEL` | x |\n")


def test_the_named_bindings_are_every_setting_the_host_reads_for_a_binding() -> None:
    """What function_app.py names through shared/core/bindings.py is what the host reads: every `%NAME%`
    and `connection` in the function.json of every function (as the worker hands them to the host)."""
    app = function_app.app
    app.functions_bindings = None  # get_functions() refuses a second call otherwise
    docs = [json.loads(f.get_function_json()) for f in app.get_functions()]
    app.functions_bindings = None
    expressions = {m for d in docs for b in d["bindings"] for v in b.values() if isinstance(v, str)
                   for m in BINDING_EXPRESSION.findall(v)}
    connections = {b["connection"] for d in docs for b in d["bindings"] if b.get("connection")}
    assert expressions and connections
    assert binding_settings() == (expressions, connections)
