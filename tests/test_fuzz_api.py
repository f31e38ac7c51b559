"""Property-based fuzz of the whole HTTP API (schemathesis against /openapi.json) through the local runner.

Every operation the running app documents is fuzzed, so routes added later are covered without
editing this file. Valid (positive) and schema-violating (negative) requests are generated; checks:
no 5xx, every error is RFC 9457 problem details, responses match the documented status codes,
content types and schemas, and a request generated as invalid is never accepted (2xx).

Bounded and repeatable: a fixed number of examples per operation and mode, a fixed seed,
deterministic generation, no shrinking, no example database.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from functools import lru_cache
from typing import Any, Iterator

import jsonschema_rs
import pytest
import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from localdev import services
from tests.functions_client import auth_headers
from tests.test_devhost_e2e import start_runner

FUNCTION_KEY = "fuzz-function-key"
EXAMPLES_PER_OPERATION = 100  # positive and negative together
SEED = 20261127
# Methods an Azure Functions HTTP trigger can accept: the host itself answers anything else (TRACE,
# QUERY) with a bare 404 before the app sees it, so only these are probed as unexpected methods.
FUNCTIONS_METHODS = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]
import os
COVERAGE = os.environ.get("COV") == "1"

_cases: Counter[str] = Counter()


def problem_details(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx the app answers is `application/problem+json` with type, title and status."""
    if response.status_code < 400:
        return None
    headers = {k.lower(): v for k, v in response.headers.items()}
    ctype = (headers.get("content-type") or [""])[0].split(";")[0].strip().lower()
    assert ctype == "application/problem+json", f"error {response.status_code} sent as {ctype or 'no content type'}"
    body = response.json()
    assert isinstance(body, dict), "problem details must be a JSON object"
    missing = [k for k in ("type", "title", "status") if k not in body]
    assert not missing, f"problem details without {missing}"
    assert body["status"] == response.status_code, "problem `status` differs from the HTTP status"
    assert isinstance(body["type"], str) and isinstance(body["title"], str)
    return True


BULK_PATH = "/events/bulk"


@lru_cache(maxsize=4)
def _event_validator(components_json: str) -> Any:
    components = json.loads(components_json)
    return jsonschema_rs.Draft202012Validator({"$ref": "#/components/schemas/EventIn", "components": components},
                                              validate_formats=True)


def bulk_invalid_events_rejected(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """POST /events/bulk answers one result per event ("one bad event never fails the others"), so a
    200 to a batch holding schema-violating events is by design. What must hold instead: the envelope
    itself is valid, and every event that violates the documented EventIn schema is `rejected`."""
    if case.meta is None or not case.meta.generation.mode.is_negative or not 200 <= response.status_code < 300:
        return None
    body = case.body
    assert isinstance(body, dict) and set(body) == {"events"} and isinstance(body["events"], list) \
        and len(body["events"]) <= 1000, "a schema-violating bulk envelope was accepted"
    validator = _event_validator(json.dumps(case.operation.schema.raw_schema["components"]))
    results = response.json()["results"]
    assert len(results) == len(body["events"]), "one result per event, in request order"
    for i, event in enumerate(body["events"]):
        if not validator.is_valid(event):
            assert results[i]["status"] == "rejected", f"events[{i}] violates EventIn but was {results[i]['status']}"
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, problem_details]
BULK_CHECKS = [c for c in CHECKS if c is not negative_data_rejection] + [bulk_invalid_events_rejected]


@pytest.fixture(scope="module")
def fuzz_base_url(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # The rate limit is off so that every generated request reaches its handler (429 is tested in
    # tests/security/test_ratelimit.py); function keys are on, as in Azure.
    env = {**app_env, "RATE_LIMIT_EVENTS_PER_SECOND": "0"}
    proc, base = start_runner(env, tmp_path_factory.mktemp("fuzz"), "--function-key", FUNCTION_KEY)
    yield base
    services.stop(proc)


@pytest.fixture(scope="module")
def api_schema(fuzz_base_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    generation = {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION, "deterministic": True, "no-shrink": True,
                  "with-security-parameters": False, "allow-x00": True}
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "headers": {**auth_headers(), "x-functions-key": FUNCTION_KEY},
        "generation": generation,
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": COVERAGE, "unexpected-methods": FUNCTIONS_METHODS}, "stateful": {"enabled": False},
                   "fuzzing": {"enabled": True}},
    })
    schema = schemathesis.openapi.from_url(fuzz_base_url + "/openapi.json", config=config)
    started = time.perf_counter()
    yield schema
    elapsed = time.perf_counter() - started
    per_op = ", ".join(f"{op}: {n}" for op, n in sorted(_cases.items()) if not op.startswith("mode:"))
    modes = ", ".join(f"{op[5:]}: {n}" for op, n in sorted(_cases.items()) if op.startswith("mode:"))
    total = sum(n for op, n in _cases.items() if not op.startswith("mode:"))
    summary = f"fuzz: {total} cases in {elapsed:.1f} s ({modes}); per operation: {per_op}"
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print("\n" + summary)


# A filter that selects every path, so /openapi.json (left out by default as the schema's own source)
# is fuzzed too.
schema = schemathesis.pytest.from_fixture("api_schema").include(path_regex="^/")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 renames the running test through `node._nodeid`, which pytest 9.2 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Case) -> None:
    _cases[case.operation.label] += 1
    if case.meta is not None:
        _cases["mode:" + case.meta.generation.mode.value] += 1
    case.call_and_validate(checks=BULK_CHECKS if case.operation.path == BULK_PATH else CHECKS)
