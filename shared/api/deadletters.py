"""GET /deadletters/{tenantId} and POST /deadletters/{tenantId}/replay: every kind of dead letter
(delivery/deadletters.py) -- deliveries given up on, change-feed events not published and documents
not mapped. `_unmapped` (documents naming no valid tenant) answers admins only."""
from __future__ import annotations

from typing import Any

from shared.api import paging
from shared.api.audit import record_audit
from shared.api.params import bad_param, int_param, tenant_param
from shared.app.services import get_services
from shared.core.validation import field_error
from shared.delivery.deadletters import is_position
from shared.delivery.replay import NothingReplayed, replay
from shared.http.adapter import read_json
from shared.http.outages import RETRY_AFTER_SECONDS
from shared.http.types import ApiRequest, ApiResponse, ProblemError, json_response

MAX_REPLAY = 500
PAGE_SCOPE = "deadletters"
REPLAY_SCOPE = "deadletters-replay"  # a replay's token continues replays only, not the listing


async def list_deadletters(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req, unmapped=True)
    limit = int_param(req, "limit", 100, 1, 1000)
    include = req.query.get("includeReplayed", "false")
    if include not in ("true", "false"):
        raise bad_param("includeReplayed", "must be true or false")
    bound = {"includeReplayed": include == "true"}  # a token continues only the same listing
    after = paging.position(req, PAGE_SCOPE, tenant, bound, valid=is_position)
    page = await get_services().deadletters.list(
        tenant, limit=limit, after=after, include_replayed=include == "true")
    return json_response({"tenantId": tenant, "count": len(page.items), "truncated": page.truncated,
                          "deadLetters": page.items,
                          "continuationToken": paging.token(PAGE_SCOPE, tenant, bound, page.after)})


async def replay_deadletters(req: ApiRequest) -> ApiResponse:
    """Body `{"ids": [...]}` replays those records; `{}` the first 500 records not yet replayed, and
    `{"continuationToken": ...}` (from the answer to the call before) the next 500 past those: records
    that failed again stay not replayed, and without it every `{}` would take the same first 500."""
    tenant = tenant_param(req, unmapped=True)
    ids: list[str] | None = None
    body: Any = read_json(req, 256 * 1024)  # required: an explicit {} says "all"
    if not isinstance(body, dict) or set(body) - {"ids", "continuationToken"} or len(body) > 1:
        shapes = '{"ids": [...]}, {} or {"continuationToken": "..."}'
        raise ProblemError(400, "Bad Request", f"the body must be {shapes}",
                           errors=[{"pointer": "", "field": "(body)", "detail": f"expected {shapes}"}])
    raw_token = body.get("continuationToken")
    if raw_token is not None and not (isinstance(raw_token, str) and raw_token):
        raise _bad_token("expected the continuationToken of the answer to a replay")
    after = paging.position_of(raw_token, REPLAY_SCOPE, tenant, {}, lambda: _bad_token(paging.NOT_OURS),
                               valid=is_position)
    if "ids" in body:
        raw = body["ids"]
        # Each error names what is wrong where: the list itself, its size, or the items that are no id.
        if not isinstance(raw, list):
            errors = [field_error(["ids"], "expected a list of record ids")]
        elif len(raw) > MAX_REPLAY:
            errors = [field_error(["ids"], f"at most {MAX_REPLAY} ids; got {len(raw)}")]
        else:
            errors = [field_error(["ids", n], "expected a record id (1-512 characters)")
                      for n, i in enumerate(raw) if not (isinstance(i, str) and 0 < len(i) <= 512)][:20]
        if errors:
            raise ProblemError(400, "Bad Request", f"ids must be a list of up to {MAX_REPLAY} record ids",
                               errors=[e.model_dump(exclude_none=True) for e in errors])
        ids = raw
    # Audited (who: the principal, when: the record's time, which ids, the result per record), also
    # when the replay breaks off: records replayed before the break are marked in the table.
    target = f"deadletters/{tenant}"
    asked = {"ids": ids if ids is not None else
             "all not yet replayed" + (", continued" if after is not None else "")}
    try:
        results, nxt = await replay(get_services(), tenant, ids, limit=MAX_REPLAY, after=after)
    except NothingReplayed as exc:  # the store hangs: nothing happened to audit (nor could it be written)
        raise ProblemError(503, "Service Unavailable", str(exc),
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc
    except Exception as exc:
        await record_audit(req, tenant, "deadletters.replay", target, asked,
                           {"error": f"replay broke off: {type(exc).__name__}"})
        raise
    counts: dict[str, int] = {}
    for r in results:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    await record_audit(req, tenant, "deadletters.replay", target, asked,
                       {"total": len(results), "counts": counts,
                        "results": [{"id": r["id"], "result": r["result"]} for r in results]})
    return json_response({"tenantId": tenant, "total": len(results), "counts": counts, "results": results,
                          "continuationToken": paging.token(REPLAY_SCOPE, tenant, {}, nxt)})


def _bad_token(detail: str) -> ProblemError:
    return ProblemError(400, "Bad Request", f"invalid continuationToken: {detail}",
                        errors=[field_error(["continuationToken"], detail).model_dump(exclude_none=True)])
