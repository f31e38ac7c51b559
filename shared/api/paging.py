"""Continuation tokens at the API's edge: the caller's token back to a store position, a store's
next position out as a token. One codec for every paged read (shared/storage/pagetokens.py): a token is
bound to its list (`scope`), the tenant and the query parameters that define the result set, and
any token the service did not issue for them answers 400 problem details."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shared.api.params import bad_param
from shared.app.services import get_services
from shared.http.types import ApiRequest, ProblemError
from shared.storage.pagetokens import BadPageToken


def as_sent(req: ApiRequest, *names: str) -> dict[str, str | None]:
    """Query parameters as the client sent them (absent = None), to bind a token to."""
    return {n: req.query.get(n) for n in names}


NOT_OURS = "not a token this API issued for this tenant and query"


def position(req: ApiRequest, scope: str, tenant: str, bound: Mapping[str, Any],
             param: str = "continuationToken", valid: Callable[[Any], bool] | None = None) -> Any | None:
    """The store position the request's token carries; None without one; 400 for a bad one.
    `bound` = what defines the result set (a page continues only the same query); `valid`, the
    store's check of a position's shape."""
    return position_of(req.query.get(param), scope, tenant, bound, lambda: bad_param(param, NOT_OURS), valid)


def position_of(raw: str | None, scope: str, tenant: str, bound: Mapping[str, Any],
                refused: Callable[[], ProblemError],
                valid: Callable[[Any], bool] | None = None) -> Any | None:
    """`position` for a token sent anywhere (a body member, say): `refused()` is the 400 that names it.
    A signed token whose position the store no longer reads (issued before its position changed
    shape, under the same PAGE_TOKEN_KEY) is refused the same way: never a 500."""
    if not raw:
        return None
    try:
        at = get_services().page_tokens.decode(scope, tenant, bound, raw)
    except BadPageToken:
        raise refused() from None
    if valid is not None and not valid(at):
        raise refused()
    return at


def token(scope: str, tenant: str, bound: Mapping[str, Any], at: Any | None) -> str | None:
    """The token for the next page starting at `at` (None: there is no next page)."""
    if at is None:
        return None
    return get_services().page_tokens.encode(scope, tenant, bound, at)
