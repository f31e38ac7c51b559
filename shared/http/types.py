"""Plain request/response types the handlers work with (no Azure Functions types)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from shared.security.principal import Principal

PROBLEM_JSON = "application/problem+json"


class Headers(dict[str, str]):
    """Case-insensitive header map (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__({k.lower(): v for k, v in (items or {}).items()})

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class ApiRequest:
    method: str
    path: str
    headers: Headers
    query: dict[str, str]
    route: dict[str, str]
    body: bytes = b""
    correlation_id: str = ""
    traceparent: str | None = None
    principal: Principal | None = None  # set by the adapter on every non-public route


@dataclass
class ApiResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, orjson.dumps(obj), dict(headers or {}))


class ProblemError(Exception):
    """Raised anywhere below a handler to answer with problem details (RFC 9457)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type_ = type_
        self.errors = errors
        self.headers = headers or {}
        self.extensions = extensions

    def response(self, instance: str | None = None, correlation_id: str | None = None) -> ApiResponse:
        body: dict[str, Any] = {"type": self.type_, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        if correlation_id:
            body["correlationId"] = correlation_id
        body.update(self.extensions)
        return ApiResponse(self.status, orjson.dumps(body), dict(self.headers), PROBLEM_JSON)
