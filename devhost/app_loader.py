"""Load local settings and the app's function registrations."""
from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import azure.functions as func

log = logging.getLogger("devhost")
ROOT = Path(__file__).resolve().parent.parent
_SETTING_REF = re.compile(r"%([A-Za-z0-9_.:-]+)%")


def load_settings(path: Path | None = None, *, override: bool = False) -> dict[str, str]:
    """Put local.settings.json `Values` into the environment (the environment wins unless override)."""
    path = path or ROOT / "local.settings.json"
    if not path.exists():
        path = ROOT / "local.settings.sample.json"
    values: dict[str, str] = {k: str(v) for k, v in json.loads(path.read_text())["Values"].items()}
    for k, v in values.items():
        if override or k not in os.environ:
            os.environ[k] = v
    return values


def resolve(value: Any) -> Any:
    """`%NAME%` -> the setting's value, as the host resolves binding expressions from app settings."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            # An empty one too: the host then fails that function's binding (an empty queue name,
            # container or schedule), where taking it crashed the runner at start.
            if not os.environ.get(m.group(1)):
                raise KeyError(f"binding refers to %{m.group(1)}% but no such setting exists or it is empty")
            return os.environ[m.group(1)]
        return _SETTING_REF.sub(sub, value)
    return value


@dataclass
class FunctionSpec:
    name: str
    trigger: dict[str, Any]  # the trigger binding from function.json, %SETTING% resolved
    bindings: list[dict[str, Any]]
    user_function: Callable[..., Any]
    settings: dict[str, Any]  # e.g. retry policy

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @functools.cached_property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)

    @functools.cached_property
    def takes_context(self) -> bool:
        """Whether the function has a `context` parameter (worked out once: inspect.signature per
        invocation was a few percent of a small request's cost in the local runner)."""
        return "context" in inspect.signature(self.user_function).parameters


def load_functions(module: str = "function_app") -> list[FunctionSpec]:
    mod = importlib.import_module(module)
    app: func.FunctionApp = mod.app
    app.functions_bindings = None  # get_functions() refuses a second call otherwise
    specs = []
    for f in app.get_functions():
        doc = json.loads(f.get_function_json())
        try:
            bindings = [{k: resolve(v) for k, v in b.items()} for b in doc["bindings"]]
        except KeyError as exc:
            # As the host does on an indexing error: that function is not run, the others are.
            log.error("function %s not loaded: %s", f.get_function_name(), exc.args[0])
            continue
        trigger = next(b for b in bindings if str(b["type"]).endswith("Trigger"))
        settings: dict[str, Any] = {}
        retry = f.get_settings_dict("retry_policy") if hasattr(f, "get_settings_dict") else None
        if retry:
            settings["retry"] = retry
        specs.append(FunctionSpec(f.get_function_name(), trigger, bindings, f.get_user_function(), settings))
    return specs
