"""Property-based fuzz of the whole HTTP API: schemathesis against /openapi.json, through the local runner.

Every operation the running app documents is fuzzed, so routes added later are covered without
editing this file. Schemathesis generates valid (positive) and schema-violating (negative) requests,
in its coverage phase (boundary values, missing fields, wrong types, unexpected methods) and its
fuzzing phase (random data). Checks on every response:
- no 5xx (`not_a_server_error`);
- every 4xx/5xx is RFC 9457 problem details with type/title/status (`problem_details`, below);
- status code, content type and body as documented (`status_code_conformance`,
  `content_type_conformance`, `response_schema_conformance`);
- nothing schema-violating accepted (`negative_data_rejection`; for POST /events/bulk, whose
  per-event results are by design, `bulk_invalid_events_rejected`).

Bounded and repeatable: a fixed number of fuzzing examples per operation, a fixed seed,
deterministic generation, no shrinking, no example database; the number of cases and the time
are printed at the end of the module.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import Counter
from functools import lru_cache
from typing import Any, Iterator

import jsonschema_rs
import pytest
import requests
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
from shared.core import limits
from tests.functions_client import auth_headers
from tests.test_devhost_e2e import start_runner
from tests.vector_support import TOKENIZER, local_embedder

FUNCTION_KEY = "fuzz-function-key"  # the runner checks it like the Functions host (local value, not a secret)
# Fuzzing-phase examples per operation (positive and negative together; the coverage phase adds its
# own) and the seed: fixed for CI, overridable for a longer exploratory run.
EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "100"))
SEED = int(os.environ.get("FUZZ_SEED", "20261127"))
# Methods an Azure Functions HTTP trigger can accept: the host itself answers any other (TRACE,
# QUERY) with a bare 404 before the app sees the request, so only these are probed as unexpected.
FUNCTIONS_METHODS = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]
BULK_PATH = "/events/bulk"
# The Functions host refuses a URL longer than 4 KB before the app sees it (Azure Functions HTTP
# trigger limits), so such cases are not sent; they are counted apart.
MAX_URL_BYTES = 4096

_cases: Counter[str] = Counter()  # operation label -> cases sent
_modes: Counter[str] = Counter()  # positive / negative
_skipped: Counter[str] = Counter()  # operation label -> cases not sent (URL over the host's limit)
_digest = hashlib.sha256()  # of every case sent: equal digests = the same cases on every run


# ---- checks -----------------------------------------------------------------------------------


def problem_details(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx the app answers is `application/problem+json` with type, title and status."""
    if response.status_code < 400:
        return None
    headers = {k.lower(): v for k, v in response.headers.items()}
    ctype = (headers.get("content-type") or [""])[0].split(";")[0].strip().lower()
    assert ctype == "application/problem+json", (
        f"error {response.status_code} sent as {ctype or 'no content type'}"
    )
    body = response.json()
    assert isinstance(body, dict), "problem details must be a JSON object"
    missing = [k for k in ("type", "title", "status") if k not in body]
    assert not missing, f"problem details without {missing}"
    assert isinstance(body["type"], str) and isinstance(body["title"], str)
    assert body["status"] == response.status_code, "problem `status` differs from the HTTP status"
    return True


@lru_cache(maxsize=4)
def _event_validator(components_json: str) -> Any:
    root = {"$ref": "#/components/schemas/EventIn", "components": json.loads(components_json)}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def bulk_invalid_events_rejected(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """POST /events/bulk answers a result per event ("one bad event never fails the others"), so a 200
    to a batch holding schema-violating events is by design. What must hold instead: the envelope is
    valid, and every event that violates the documented EventIn schema comes back `rejected`."""
    if (
        case.meta is None
        or not case.meta.generation.mode.is_negative
        or not 200 <= response.status_code < 300
    ):
        return None
    body = case.body
    assert isinstance(body, dict) and set(body) == {"events"}, "a bulk body with other members was accepted"
    events = body["events"]
    assert isinstance(events, list) and len(events) <= limits.MAX_BULK_EVENTS, (
        "a bad `events` array was accepted"
    )
    validator = _event_validator(json.dumps(case.operation.schema.raw_schema["components"]))
    results = response.json()["results"]
    assert len(results) == len(events), "one result per event, in request order"
    for i, event in enumerate(events):
        if not validator.is_valid(event):
            assert results[i]["status"] == "rejected", (
                f"events[{i}] violates EventIn but is {results[i]['status']}"
            )
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    problem_details,
]
BULK_CHECKS = [c for c in CHECKS if c is not negative_data_rejection] + [bulk_invalid_events_rejected]


# ---- the runner and the schema ----------------------------------------------------------------


def local_embedder_tokenizer() -> Any:
    local_embedder()  # fetches the tokenizer once (tests/vector_support.py)
    return TOKENIZER


@pytest.fixture(scope="module")
def fuzz_base_url(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Function keys on, as in Azure. The rate limit is off so that every generated request reaches
    # its handler (429 is tested in tests/security/test_ratelimit.py).
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {
        **app_env,
        "RATE_LIMIT_EVENTS_PER_SECOND": "0",
        # GET /search: the offline embedder and a vector index of this run's own.
        "LOCAL_TOKENIZER_PATH": str(local_embedder_tokenizer()),
        "VECTOR_SQLITE_PATH": str(tmp / "vector.db"),
        "VECTOR_QUEUE": f"vec-fuzz-{uuid.uuid4().hex[:8]}",
    }
    proc, base = start_runner(env, tmp, "--function-key", FUNCTION_KEY)
    yield base
    services.stop(proc)


@pytest.fixture(scope="module")
def api_schema(fuzz_base_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # A platform admin (every tenant) so that requests get past authorisation to the handlers;
            # tenant isolation has its own matrix in tests/security/test_tenant_matrix.py.
            "headers": {**auth_headers(), "x-functions-key": FUNCTION_KEY},
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "no-shrink": True,
                "database": "none",
                "with-security-parameters": False,
            },
            "phases": {
                "examples": {"enabled": False},
                "stateful": {"enabled": False},
                "coverage": {"enabled": True, "unexpected-methods": FUNCTIONS_METHODS},
                # No learning from earlier responses (ids, times): the same cases on every run.
                "fuzzing": {
                    "enabled": True,
                    "error-feedback": {"enabled": False},
                    "extra-data-sources": {"responses": False},
                },
            },
        }
    )
    schema = schemathesis.openapi.from_url(fuzz_base_url + "/openapi.json", config=config)
    started = time.perf_counter()
    yield schema
    elapsed = time.perf_counter() - started
    per_op = ", ".join(f"{op}: {n}" for op, n in sorted(_cases.items()))
    modes = ", ".join(f"{m}: {n}" for m, n in sorted(_modes.items()))
    summary = (
        f"fuzz: {sum(_cases.values())} cases in {elapsed:.1f} s ({modes}; digest {_digest.hexdigest()[:12]}; "
        f"{sum(_skipped.values())} not sent, URL over {MAX_URL_BYTES} bytes); per operation: {per_op}"
    )
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print("\n" + summary)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 renames the running test through `node._nodeid`, which pytest 9.2 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


# A filter selecting every path, so that /openapi.json (left out by default as the schema's own
# source) is fuzzed too.
schema = schemathesis.pytest.from_fixture("api_schema").include(path_regex="^/")


def _url_bytes(case: Case) -> int:
    kwargs = case.as_transport_kwargs(base_url="http://h")
    return len(requests.Request("GET", kwargs["url"], params=kwargs.get("params")).prepare().url or "")


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Case) -> None:
    if _url_bytes(case) > MAX_URL_BYTES:
        _skipped[case.operation.label] += 1
        return
    _cases[case.operation.label] += 1
    body = (
        case.body if isinstance(case.body, (dict, list, str, int, float, bool, type(None))) else "(no body)"
    )
    _digest.update(
        repr((case.method, case.formatted_path, case.query, body)).encode("utf-8", "surrogatepass")
    )
    if case.meta is not None:
        _modes[case.meta.generation.mode.value] += 1
    case.call_and_validate(checks=BULK_CHECKS if case.operation.path == BULK_PATH else CHECKS)


def test_every_documented_operation_was_fuzzed(fuzz_base_url: str) -> None:
    """Routes added later are picked up from /openapi.json: each must have been exercised above."""
    if not _cases:
        pytest.skip("the fuzz test did not run in this session")
    import httpx  # noqa: PLC0415

    paths = httpx.get(fuzz_base_url + "/openapi.json").json()["paths"]
    documented = {f"{method.upper()} {path}" for path, ops in paths.items() for method in ops}
    assert documented <= set(_cases), f"not fuzzed: {sorted(documented - set(_cases))}"
