"""shared/core/bindings.py: which settings the app's bindings name and which of them are unset."""
from __future__ import annotations

import function_app  # noqa: F401 - importing it is what makes its bindings name their settings
from shared.core import bindings

EVERY = {n: "x" for n in bindings.names()}


def test_every_named_setting_given_is_none_unset() -> None:
    assert bindings.unset(EVERY) == []


def test_an_empty_or_missing_setting_is_unset_and_named_in_order() -> None:
    env = {**EVERY, "RETRY_QUEUE": ""}
    del env["BACKFILL_QUEUE"]
    assert bindings.unset(env) == ["BACKFILL_QUEUE", "RETRY_QUEUE"]
    assert "app settings unset: BACKFILL_QUEUE, RETRY_QUEUE;" in bindings.describe(bindings.unset(env))


def test_a_connection_is_given_by_its_identity_based_settings_too() -> None:
    """As the host finds a connection: NAME (a connection string) or NAME__<property> (identity-based)."""
    env = {k: v for k, v in EVERY.items() if k not in ("COSMOS", "STORAGE_CONNECTION_STRING")}
    assert bindings.unset(env) == ["COSMOS", "STORAGE_CONNECTION_STRING"]
    env.update({"COSMOS__accountEndpoint": "https://a.documents.azure.com:443/",
                "STORAGE_CONNECTION_STRING__queueServiceUri": "https://a.queue.core.windows.net"})
    assert bindings.unset(env) == []
    env["COSMOS__accountEndpoint"] = ""
    assert bindings.unset(env) == ["COSMOS"]


def test_a_plain_setting_is_not_given_by_a_double_underscore_form() -> None:
    env = {k: v for k, v in EVERY.items() if k != "RETRY_QUEUE"}
    env["RETRY_QUEUE__name"] = "delivery-retries"
    assert bindings.unset(env) == ["RETRY_QUEUE"]


def test_the_suite_sets_every_binding_setting_as_the_host_has_them() -> None:
    """tests/conftest.py's list is the bindings' own `%NAME%` settings (not their connections)."""
    from tests.conftest import BINDING_SETTINGS  # noqa: PLC0415

    assert set(BINDING_SETTINGS) == {n for n, kind in bindings.names().items() if kind == "setting"}
