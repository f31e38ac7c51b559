"""GET|PUT /stream-config/{tenantId}: stored in an Azure Table, ETag + If-Match for concurrency."""
from __future__ import annotations

import logging

from confluent_kafka import KafkaException

from shared.api.audit import record_audit
from shared.api.params import bad_param, tenant_param
from shared.app.services import get_services
from shared.core.destination_options import KafkaOptions, delivery_window_problems
from shared.core.entity_tags import EntityTags, parse_entity_tags
from shared.core.streamconfig import StreamConfigIn, unorderable_operands
from shared.core.validation import field_error
from shared.delivery.configstore import PreconditionFailed, WriteOutcomeUnknown
from shared.destinations.event_records import TopicRouter
from shared.destinations.kafka import KafkaConfigError, KafkaDestination
from shared.http.adapter import read_model
from shared.http.types import ApiRequest, ApiResponse, ProblemError, json_response

log = logging.getLogger("grc.config")

MAX_CONFIG_BYTES = 256 * 1024


async def get_stream_config(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    if_none_match = _entity_tags(req, "If-None-Match")
    config, etag = await get_services().configs.read(tenant)
    if etag and if_none_match is not None and if_none_match.matches(etag):
        return ApiResponse(304, headers={"ETag": etag})  # the client's copy is current (RFC 9110 15.4.5)
    headers = {"ETag": etag} if etag else {}
    return json_response(config.model_dump(mode="json"), headers=headers)


def _entity_tags(req: ApiRequest, name: str) -> EntityTags | None:
    """The header's entity tags, or None when absent; 400 naming the header when malformed."""
    value = req.headers.get(name)
    if value is None:
        return None
    try:
        return parse_entity_tags(value)
    except ValueError as exc:
        raise bad_param(name, str(exc), "headers") from exc


async def put_stream_config(req: ApiRequest) -> ApiResponse:
    tenant = tenant_param(req)
    if_match, if_none_match = _entity_tags(req, "If-Match"), _entity_tags(req, "If-None-Match")
    body = read_model(req, StreamConfigIn, MAX_CONFIG_BYTES, "the stream configuration")
    # The guarantees docs/delivery.md states hold only within windows: refuse a config that breaks them.
    problems = delivery_window_problems(body.destinations, get_services().settings.kafka_delivery_timeout_ms)
    if problems:
        raise ProblemError(400, "Bad Request", "the stream configuration would break its delivery guarantees",
                           errors=[field_error(loc, detail, "delivery_window").model_dump(exclude_none=True)
                                   for loc, detail in problems])
    unorderable = unorderable_operands(body.filters)
    if unorderable:
        raise ProblemError(400, "Bad Request", "the stream configuration is not valid",
                           errors=[field_error(loc, detail, "value_error").model_dump(exclude_none=True)
                                   for loc, detail in unorderable])
    if body.tenantId is not None and body.tenantId != tenant:
        raise ProblemError(400, "Bad Request", "tenantId in the body differs from the path",
                           errors=[{"pointer": "/tenantId", "field": "tenantId", "detail": "must equal the path's tenantId"}])
    await _check_topics(tenant, body)
    try:
        config, etag, previous = await get_services().configs.write(
            tenant, body, if_match=if_match, if_none_match=if_none_match)
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


async def _check_topics(tenant: str, body: StreamConfigIn) -> None:
    """An enabled Kafka destination's topics must exist: Event Hubs creates no event hub through
    Kafka, so a missing one (a typo, one infra does not provision) would fail every delivery to it,
    found only in the dead letters. 422 naming each; not checked when the broker cannot be asked
    within HEALTH_TIMEOUT_SECONDS."""
    services = get_services()
    for j, d in enumerate(body.destinations):
        if d.type != "kafka" or not d.enabled:
            continue
        dest = services.destinations.get("kafka")
        if not isinstance(dest, KafkaDestination):
            return
        options: KafkaOptions = d.options  # type: ignore[assignment]
        default = services.settings.kafka_default_topic
        topics = TopicRouter(body, options.routes, default).topics  # type: ignore[arg-type]
        try:
            missing = set(await dest.missing_topics(topics, options))
        except (KafkaException, KafkaConfigError) as exc:
            # A guard against a wrong name, not a gate: with the broker down the config is stored
            # unchecked (its deliveries are parked until the broker is back, as any other's).
            log.warning("stream config of %s stored with its Kafka topics unchecked: %s", tenant,
                        type(exc).__name__)
            continue
        if not missing:
            continue
        # Where each topic was named: the stream's `topics` first, else a route (none: the default).
        named: dict[str, list[str | int]] = {}
        for i, t in enumerate(body.topics):
            named.setdefault(t, ["topics", i])
        for k, r in enumerate(options.routes):
            named.setdefault(r.topic, ["destinations", j, "config", "routes", k, "topic"])
        errors = []
        for t in topics:
            if t not in missing:
                continue
            loc = named.get(t, ["topics"])
            detail = (f"no topic (event hub) {t!r} exists; create it first (infra/main.bicep `eventHubs`)"
                      if t in named else
                      f"no topics named, and the default topic {t!r} (KAFKA_DEFAULT_TOPIC) does not exist")
            errors.append(field_error(loc, detail, "unknown_topic").model_dump(exclude_none=True))
        raise ProblemError(422, "Unprocessable Content",
                           f"the Kafka destination names {len(missing)} topic(s) the broker does not have",
                           errors=errors)
