"""The runner's floor (bench/floor_app.py) stands for the service's single POST in bench/runner_share.py:
the same route and method, and an answer of the service's shape, so that the floor costs what the
runner spends on such a request and nothing less."""
import orjson

from bench import floor_app
from shared.api.routes import API_ROUTES
from shared.core.results import EventResult


def test_the_floor_serves_the_service_s_route_and_answers_an_event_result() -> None:
    [fn] = floor_app.app.get_functions()
    trigger = fn.get_trigger()
    [route] = [r for r in API_ROUTES if r.name == "publish_event"]
    methods = [str(m.value).upper() for m in trigger.methods]
    assert (trigger.route, methods) == (route.path, list(route.methods))
    answer = orjson.loads(floor_app._ANSWER)
    assert answer.pop("correlationId")
    assert EventResult.model_validate(answer).status == "accepted"
