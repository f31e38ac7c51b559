"""GET|PUT /stream-config/{tenantId}: stored in an Azure Table, ETag + If-Match for concurrency."""
from __future__ import annotations

from shared.api.audit import record_audit
from shared.api.params import tenant_param
from shared.app.services import get_services
from shared.core.destination_options import delivery_window_problems
from shared.core.streamconfig import StreamConfigIn
from shared.core.validation import field_error
from shared.delivery.configstore import PreconditionFailed, WriteOutcomeUnknown
from shared.http.adapter import read_model
from shared.http.types import ApiRequest, ApiResponse, ProblemError, json_response

MAX_CONFIG_BYTES = 256 * 1024


async def get_stream_config(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    config, etag = await get_services().configs.read(tenant)
    headers = {"ETag": etag} if etag else {}
    return json_response(config.model_dump(mode="json"), headers=headers)


async def put_stream_config(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    body = read_model(req, StreamConfigIn, MAX_CONFIG_BYTES, "the stream configuration")
    # The guarantees docs/delivery.md states hold only within windows: refuse a config that breaks them.
    problems = delivery_window_problems(body.destinations, get_services().settings.kafka_delivery_timeout_ms)
    if problems:
        raise ProblemError(400, "Bad Request", "the stream configuration would break its delivery guarantees",
                           errors=[field_error(loc, detail, "delivery_window").model_dump(exclude_none=True)
                                   for loc, detail in problems])
    if body.tenantId is not None and body.tenantId != tenant:
        raise ProblemError(400, "Bad Request", "tenantId in the body differs from the path",
                           errors=[{"pointer": "/tenantId", "field": "tenantId", "detail": "must equal the path's tenantId"}])
    try:
        config, etag, previous = await get_services().configs.write(
            tenant, body, if_match=req.headers.get("if-match"), if_none_match=req.headers.get("if-none-match")
        )
    except PreconditionFailed as exc:
        raise ProblemError(412, "Precondition Failed", str(exc)) from exc
    except WriteOutcomeUnknown as exc:  # the change may be made: in the trail as such (the answer: 503)
        cause = type(exc.__cause__).__name__
        await record_audit(req, tenant, "stream-config.put", f"stream-config/{tenant}", None,
                           {"outcome": f"unknown ({cause}): the write may have been applied",
                            "requested": body.model_dump(mode="json", exclude_none=True)})
        raise
    await record_audit(req, tenant, "stream-config.put", f"stream-config/{tenant}",
                       previous.model_dump(mode="json") if previous else None, config.model_dump(mode="json"))
    return json_response(config.model_dump(mode="json"), 200 if previous else 201, headers={"ETag": etag})
