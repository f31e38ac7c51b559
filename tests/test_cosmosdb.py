"""The service's Cosmos client settings and the request-charge hook."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.core.settings import Settings
from shared.storage import cosmosdb


def fake_container(headers: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(client_connection=SimpleNamespace(last_response_headers=headers))


def test_request_charge_reaches_every_hook_and_a_broken_hook_is_ignored() -> None:
    seen: list[tuple[str, float]] = []

    def broken(op: str, ru: float) -> None:
        raise RuntimeError("exporter down")

    hooks = [cosmosdb.on_request_charge(broken), cosmosdb.on_request_charge(lambda op, ru: seen.append((op, ru)))]
    try:
        assert cosmosdb.record_charge("q", fake_container({"x-ms-request-charge": "2.83"})) == 2.83  # type: ignore[arg-type]
        assert cosmosdb.record_charge("q", fake_container({})) == 0.0  # type: ignore[arg-type]
        assert seen == [("q", 2.83), ("q", 0.0)]
    finally:
        for h in hooks:
            cosmosdb.remove_request_charge_hook(h)


def test_local_endpoints_and_missing_credentials() -> None:
    assert cosmosdb.is_local("http://127.0.0.1:8081") and cosmosdb.is_local("https://localhost:8081/")
    assert not cosmosdb.is_local("https://acct.documents.azure.com:443/")
    with pytest.raises(RuntimeError, match="COSMOS_DB_KEY"):
        cosmosdb.cosmos_client(Settings.model_validate({"COSMOS_DB_KEY": ""}))
