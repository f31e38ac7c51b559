"""GRC event producer: validate -> enrich -> filter -> route, with no Azure Functions types.

Library use (the MCP example of the original service):

    from shared import EventProducer
    producer = EventProducer.from_env()
    result = await producer.publish_event({...})
    await producer.close()
"""
from typing import Any

__all__ = ["EventProducer"]


def __getattr__(name: str) -> Any:  # lazy: importing shared.core.events must not pull in clients
    if name == "EventProducer":
        from shared.app.producer import EventProducer

        return EventProducer
    raise AttributeError(name)
