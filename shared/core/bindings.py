"""The app settings the Functions host reads for function_app.py's bindings, and which are unset.

The host resolves a binding's `%NAME%` from app settings only (not from the defaults in
core/settings.py), and it finds a trigger's `connection` as the setting NAME (a connection string)
or settings NAME__* (an identity-based connection). A function whose binding names a missing
`%NAME%` is not loaded, and a trigger without its connection does not start; only the host's log
says so. Without RETRY_QUEUE the app would still park failed deliveries on its default queue, and
nothing would drain them. So function_app.py names each one through `setting` or `connection`,
the app logs the unset ones at start, and GET /health reports them (observability/health.py).
"""
from __future__ import annotations

import logging
import os
from typing import Literal, Mapping

log = logging.getLogger("grc.bindings")

_NAMED: dict[str, Literal["setting", "connection"]] = {}


def setting(name: str) -> str:
    """`%name%` for a binding expression, noted as a setting the app's functions need."""
    _NAMED[name] = "setting"
    return f"%{name}%"


def connection(name: str) -> str:
    """A trigger's `connection`, noted as needed: NAME, or NAME__* for an identity-based one."""
    _NAMED[name] = "connection"
    return name


def names() -> dict[str, Literal["setting", "connection"]]:
    """Every one named so far, by kind (none in a process that did not import function_app.py)."""
    return dict(_NAMED)


def unset(env: Mapping[str, str] | None = None) -> list[str]:
    """The named settings the environment does not give (an empty value counts as unset)."""
    env = os.environ if env is None else env
    out = []
    for name, kind in sorted(_NAMED.items()):
        if env.get(name):
            continue
        prefix = f"{name}__"
        if kind == "connection" and any(k.startswith(prefix) and v for k, v in env.items()):
            continue
        out.append(name)
    return out


def describe(missing: list[str]) -> str:
    return (f"app settings unset: {', '.join(missing)}; the host loads no function whose binding names a "
            "missing %SETTING% and starts no trigger without its connection")


def log_unset() -> None:
    """Once at start: an error naming every unset one (App Insights and the host's log show it)."""
    missing = unset()
    if missing:
        log.error("%s", describe(missing))
