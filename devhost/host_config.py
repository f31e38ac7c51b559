"""host.json as the Functions host reads it: the file, then `AzureFunctionsJobHost__<path>` app settings.

The host builds its configuration from host.json and then from the environment: an app setting named
`AzureFunctionsJobHost__` plus the JSON path, `__` between levels, overrides that value (Azure
Functions, "host.json reference": "Override host.json values"). .NET configuration keys match in any
case. An operator uses it to change a value in Azure without redeploying, e.g.
`AzureFunctionsJobHost__extensions__queues__maxDequeueCount=3`, and under `func start` a value in
local.settings.json's `Values` applies the same way: the runner reads every host.json value it keeps
(functionTimeout, extensions.queues) through `host_config`, after local.settings.json is loaded.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devhost.app_loader import ROOT

OVERRIDE_PREFIX = "AzureFunctionsJobHost__"


def host_config(path: Path = ROOT / "host.json", environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """host.json (empty when missing) with every `AzureFunctionsJobHost__` setting applied over it."""
    config: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    env = os.environ if environ is None else environ
    for name in overrides(env):
        _put(config, name[len(OVERRIDE_PREFIX):].split("__"), env[name])
    return config


def overrides(environ: Mapping[str, str] | None = None) -> list[str]:
    """The `AzureFunctionsJobHost__<path>` settings (prefix in any case), sorted."""
    prefix = OVERRIDE_PREFIX.lower()
    env = os.environ if environ is None else environ
    return sorted(n for n in env if n.lower().startswith(prefix) and len(n) > len(prefix))


def lookup(config: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    """The value at `path`, its names matched in any case (as the host's configuration matches them)."""
    node: Any = config
    for part in path:
        if not isinstance(node, Mapping):
            return default
        key = _key(node, part)
        if key not in node:
            return default
        node = node[key]
    return node


def _put(node: dict[str, Any], path: list[str], value: str) -> None:
    for part in path[:-1]:
        key = _key(node, part)
        child = node.get(key)
        if not isinstance(child, dict):  # a new section, or a value the setting turns into one
            child = node[key] = {}
        node = child
    node[_key(node, path[-1])] = value


def _key(node: Mapping[str, Any], part: str) -> str:
    """The existing key `part` names, in any case; else `part` as given."""
    lowered = part.lower()
    return next((k for k in node if k.lower() == lowered), part)
