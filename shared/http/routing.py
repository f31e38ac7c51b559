"""A route: one HTTP function of the app. The route table (shared/api/routes.py) is a tuple of these;
`functions_adapter.http_functions` registers it with the Functions host, `api/openapi.py` documents
it, `allowed_methods` answers 405s from it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from shared.http.adapter import Handler

# The fallback's method: every method the host routes (the host answers a wrong method with 404, so
# a `{*path}` function with the lowest precedence turns it into 405 with Allow).
ANY_METHOD = "*"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Route:
    name: str  # the Functions function name: one function per route, each on its own in the portal
    method: str  # one HTTP method, or ANY_METHOD
    path: str  # Functions route template, no leading slash
    handler: Handler
    summary: str
    anonymous: bool = False  # auth level ANONYMOUS (else FUNCTION) and no caller identity
    documented: bool = True  # in /openapi.json (and in what 405 knows)
    request_schema: str | None = None  # components/schemas name
    response_schema: str | None = None
    success: int = 200
    # (name, JSON type or a JSON Schema, description)
    query: tuple[tuple[str, str | dict[str, Any], str], ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)
    headers: tuple[tuple[str, dict[str, Any], str], ...] = ()  # (header name, JSON Schema, description)
    required_query: tuple[str, ...] = ()  # query parameters the handler refuses to do without
    # The path's tenantId may also be the reserved partition of dead letters naming no valid tenant
    # (UNMAPPED_TENANT), served to admins only.
    unmapped: bool = False
    # Path parameters besides tenantId: (name, JSON Schema, description).
    path_params: tuple[tuple[str, dict[str, Any], str], ...] = ()
    # Answers beyond the common ones: (status, description); a 2xx carries the response schema,
    # anything else problem details.
    responses: tuple[tuple[int, str], ...] = ()
    # Seconds the whole answer may take (None: no bound of its own). Routes of Table storage have one:
    # a store that hangs is answered 503 with Retry-After when it passes, not after the SDK's own
    # timeouts and retries. A read is cancelled then (that changes nothing).
    deadline: float | None = None
    # A write: past the deadline the client gets its 503, and the work is NOT cancelled but runs to
    # its end on the instance (its outcome logged): cancelled halfway, a config could change without
    # its version bump or its audit record (shared/http/adapter.py, `_answer_within`).
    completes: bool = False

    @property
    def methods(self) -> tuple[str, ...]:
        return HTTP_METHODS if self.method == ANY_METHOD else (self.method,)


@lru_cache(maxsize=256)
def _regex(template: str) -> re.Pattern[str]:
    parts = []
    for seg in template.strip("/").split("/"):
        # Literal segments in any case: the host's routing matches them so (devhost/http_driver.py).
        parts.append("[^/]+" if seg.startswith("{") else f"(?i:{re.escape(seg)})")
    return re.compile("^/" + "/".join(parts) + "/?$")


def allowed_methods(routes: Sequence[Route], path: str) -> list[str]:
    """The methods the documented routes answer on `path` (empty: no route has it)."""
    return sorted({r.method for r in routes if r.documented and _regex(r.path).fullmatch(path)})
