"""Continuation tokens of every paged read (history, dead letters, audit trail): one codec.

A token is `<payload>.<tag>`, both base64url: the payload is the store's own position (JSON, signed,
not encrypted: it holds nothing of another tenant), the tag an HMAC-SHA256 over the list it belongs
to (`scope`), the tenant, the query that defines the result set, and the payload. So a token is
only taken back for the same list, tenant and query it was issued for; anything else (forged,
edited, another tenant's, another filter's, truncated) is refused with `BadPageToken`, which the
API answers with 400 problem details.

The key is the setting PAGE_TOKEN_KEY (at least 32 bytes), the same on every instance so a page
fetched from one instance continues on any other. Locally local.settings.sample.json has a
development value; infra/ keeps it in Key Vault (a new key at each deployment unless the
`pageTokenKey` parameter is given: tokens issued before it are then refused, and a client starts
its listing again). It is never logged. Without it (unit tests, a bare `Settings()`), a random key
per process is used, and in Azure (WEBSITE_INSTANCE_ID set) that is refused.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from shared.core.settings import Settings

log = logging.getLogger("grc.pagetokens")

MIN_KEY_BYTES = 32
MAX_TOKEN_CHARS = 4096  # far above any token issued; longer ones are refused unread
TAG_BYTES = 16  # 128-bit tag
_CONTEXT = b"grc-page-token/1"


class BadPageToken(ValueError):
    """A token this service did not issue for this list, tenant and query."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"PAGE_TOKEN_KEY must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:  # never the key
        return "PageTokens(<key>)"

    @classmethod
    def from_settings(cls, settings: Settings) -> "PageTokens":
        if settings.page_token_key:
            return cls(settings.page_token_key.encode())
        if os.environ.get("WEBSITE_INSTANCE_ID"):
            raise ValueError("PAGE_TOKEN_KEY is not set: continuation tokens must verify on every instance")
        log.warning("PAGE_TOKEN_KEY is not set: continuation tokens are valid on this process only")
        return cls(secrets.token_bytes(MIN_KEY_BYTES))

    def _tag(self, scope: str, tenant: str, query: Mapping[str, Any], payload: bytes) -> bytes:
        bound = orjson.dumps([scope, tenant, dict(query)], option=orjson.OPT_SORT_KEYS)
        mac = hmac.new(self._key, _CONTEXT, hashlib.sha256)
        for part in (bound, payload):  # length-prefixed: no two (bound, payload) pairs collide
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()[:TAG_BYTES]

    def encode(self, scope: str, tenant: str, query: Mapping[str, Any], state: Any) -> str:
        """A token for `state`, valid only for this scope, tenant and query."""
        payload = orjson.dumps(state)
        return f"{_b64(payload)}.{_b64(self._tag(scope, tenant, query, payload))}"

    def decode(self, scope: str, tenant: str, query: Mapping[str, Any], token: str) -> Any:
        """The state a token carries, or BadPageToken."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise BadPageToken("not a continuation token")
        body, tag = token.split(".")
        try:
            payload, given = _unb64(body), _unb64(tag)
        except (binascii.Error, ValueError):
            raise BadPageToken("not a continuation token") from None
        if not hmac.compare_digest(given, self._tag(scope, tenant, query, payload)):
            raise BadPageToken("not issued for this tenant and query")
        return orjson.loads(payload)
