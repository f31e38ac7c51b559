"""The one continuation-token codec: round trip, binding to list/tenant/query, tamper evidence."""
from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.settings import Settings
from shared.storage.pagetokens import MIN_KEY_BYTES, BadPageToken, PageTokens

KEY = b"k" * MIN_KEY_BYTES
STATE = {"h": "2026010112", "rk": "8224_abc", "f": 1, "t": 2}
QUERY = {"from": "2026-01-01T00:00:00Z", "to": None, "eventType": "RISK_CREATED", "source": None}


def test_a_token_round_trips_for_its_own_list_tenant_and_query() -> None:
    codec = PageTokens(KEY)
    token = codec.encode("history", "acme", QUERY, STATE)
    assert codec.decode("history", "acme", dict(reversed(QUERY.items())), token) == STATE  # order-free
    # Another instance with the same key (the service scales out) takes it too.
    assert PageTokens(KEY).decode("history", "acme", QUERY, token) == STATE


@pytest.mark.parametrize("scope, tenant, query", [
    ("deadletters", "acme", QUERY),  # another list
    ("history", "acme-2", QUERY),  # another tenant
    ("history", "acme", {**QUERY, "source": "MCP_SERVER"}),  # another filter
    ("history", "acme", {**QUERY, "to": "2026-01-02T00:00:00Z"}),  # another range
    ("history", "acme", {k: v for k, v in QUERY.items() if k != "source"}),  # a parameter left out
])
def test_a_token_is_refused_elsewhere(scope: str, tenant: str, query: dict[str, str | None]) -> None:
    codec = PageTokens(KEY)
    token = codec.encode("history", "acme", QUERY, STATE)
    with pytest.raises(BadPageToken):
        codec.decode(scope, tenant, query, token)


def test_an_edited_or_forged_token_is_refused() -> None:
    codec = PageTokens(KEY)
    token = codec.encode("deadletters", "acme", {}, {"NextPartitionKey": "acme", "NextRowKey": "r5"})
    body, tag = token.split(".")
    edited = base64.urlsafe_b64encode(b'{"NextPartitionKey":"globex","NextRowKey":"r5"}').decode().rstrip("=")
    unsigned = base64.urlsafe_b64encode(b'{"NextPartitionKey":"acme","NextRowKey":"r9"}').decode().rstrip("=")
    for forged in (f"{edited}.{tag}", unsigned, f"{unsigned}.", f"{body}.{tag[:-2]}", f"{body}.{tag}.x", ""):
        with pytest.raises(BadPageToken):
            codec.decode("deadletters", "acme", {}, forged)
    with pytest.raises(BadPageToken):  # signed with another key
        PageTokens(b"x" * MIN_KEY_BYTES).decode("deadletters", "acme", {}, token)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=5000))
def test_any_text_it_did_not_issue_is_refused_with_bad_page_token(text: str) -> None:
    with pytest.raises(BadPageToken):
        PageTokens(KEY).decode("audit", "acme", {}, text)


def test_the_key_comes_from_the_setting_and_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "s3cret-" + "x" * 40
    codec = PageTokens.from_settings(Settings.model_validate({"PAGE_TOKEN_KEY": key}))
    assert PageTokens(key.encode()).decode("audit", "a", {}, codec.encode("audit", "a", {}, "r1")) == "r1"
    assert key not in repr(codec) and key not in repr(Settings.model_validate({"PAGE_TOKEN_KEY": key}))
    with pytest.raises(ValueError):
        PageTokens(b"short")
    # Without the setting: a random key per process locally, refused where App Service runs the app.
    monkeypatch.delenv("WEBSITE_INSTANCE_ID", raising=False)
    a, b = PageTokens.from_settings(Settings()), PageTokens.from_settings(Settings())
    with pytest.raises(BadPageToken):
        b.decode("audit", "a", {}, a.encode("audit", "a", {}, "r1"))
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "instance-1")
    with pytest.raises(ValueError, match="PAGE_TOKEN_KEY"):
        PageTokens.from_settings(Settings())
