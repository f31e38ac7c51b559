"""The system tier's view of the service: only what a client or an operator can touch from outside.

`App` is function_app.py served by the local runner (`python -m devhost`) in its own process, on
the real local stand-ins; tests talk to it over HTTP, run its timers through the host's admin API
(`POST /admin/functions/{name}`), write documents to the local Cosmos server and read queues and
tables with the Azure SDKs, exactly as a person could. Nothing here imports `shared`: the tests
must not share the code's assumptions (tests/system/test_tier_rules.py checks it).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import httpx
import jwt
import redis as redis_client
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueServiceClient, TextBase64DecodePolicy
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from localdev import services

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SETTINGS = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
T = TypeVar("T")
# Every runner log this session wrote (conftest shows a failing test the warnings and errors its apps
# logged meanwhile: a CI run keeps only the test output).
APP_LOGS: list[Path] = []


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2,
             what: str = "condition") -> T:
    """Poll until `probe()` returns something truthy; its value, or AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s (last: {last!r})")
        time.sleep(interval)


def tenant(prefix: str = "sys") -> str:
    """A tenant id of its own for each test: tests share one running app."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def event_body(t: str, **over: Any) -> dict[str, Any]:
    """A POST /events body of tenant `t` with an eventId of its own: a failed control test unless `over`
    (which replaces any field) says otherwise."""
    body = {"tenantId": t, "eventType": "CONTROL_FAILED", "source": "BACKEND_API", "action": "TEST",
            "entityId": "ctl-7", "data": {"control": "MFA", "result": "fail"},
            "eventId": f"ev-{uuid.uuid4().hex[:12]}"}
    body.update(over)
    return body


def bearer(env: dict[str, str], tenants: list[str] | None = None, roles: list[str] | None = None,
           subject: str = "system-test", ttl: int = 3600) -> dict[str, str]:
    """A caller identity as the local runner accepts it: an HS256 token signed with the
    development key of the app's settings (what a developer mints; Azure uses Entra ID)."""
    roles = ["Events.Admin"] if tenants is None and roles is None else roles
    now = int(time.time())
    claims: dict[str, Any] = {"iss": env["AUTH_ISSUER"].split(",")[0].strip(),
                              "aud": env["AUTH_AUDIENCE"].split(",")[0].strip(),
                              "sub": subject, "iat": now, "nbf": now, "exp": now + ttl}
    if tenants is not None:
        claims[env.get("AUTH_TENANT_CLAIM", "tenants")] = tenants
    if roles is not None:
        claims["roles"] = roles
    return {"authorization": "Bearer " + jwt.encode(claims, env["AUTH_DEV_SIGNING_KEY"], algorithm="HS256")}


@dataclass
class Stack:
    """The local stand-ins for Azure, started by PID on free ports."""

    work: Path
    running: dict[str, services.Running] = field(default_factory=dict)

    def start(self, names: Iterable[str]) -> "Stack":
        for name in names:
            self.running[name] = services.start(name, self.work / name)
        return self

    def restart(self, name: str, outage: float = 0.0) -> float:
        """Stop a service by PID, wait `outage` seconds, start it on the same ports; the downtime."""
        t0 = time.monotonic()
        self.down(name)
        time.sleep(outage)
        self.up(name)
        return time.monotonic() - t0

    def down(self, name: str) -> None:
        """Stop one service by PID (SIGTERM, then SIGKILL after 2 s); `up` starts it again."""
        services.stop(self.running[name].proc, 2.0)

    def up(self, name: str) -> None:
        """Start a stopped service again on its ports (its data dir kept: durable ones keep their data)."""
        old = self.running[name]
        if old.proc.poll() is None:
            return
        self.running[name] = services.start(old.name, self.work / name, old.ports)

    def is_up(self, name: str) -> bool:
        return self.running[name].proc.poll() is None

    def stop(self) -> None:
        for r in self.running.values():
            services.stop(r.proc)

    @property
    def settings(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in self.running.values():
            out.update(r.settings)
        return out

    @property
    def storage(self) -> str:
        return self.settings["STORAGE_CONNECTION_STRING"]

    @property
    def broker(self) -> str:
        return self.settings["KAFKA_BROKER"]

    def redis(self) -> redis_client.Redis:
        """A client on the stack's Redis, to look at what the app stored there."""
        return redis_client.Redis(host=self.settings["REDIS_HOST"], port=int(self.settings["REDIS_PORT"]))

    def queues(self) -> QueueServiceClient:
        return QueueServiceClient.from_connection_string(self.storage, message_decode_policy=TextBase64DecodePolicy())

    def queue_depth(self, name: str) -> int:
        """Messages in a queue, visible or not (Azure's approximate count), 0 when it does not exist."""
        with self.queues() as qs:
            try:
                return qs.get_queue_client(name).get_queue_properties().approximate_message_count
            except ResourceNotFoundError:
                return 0

    def poison_counts(self) -> dict[str, int]:
        """Every `<queue>-poison` queue holding messages, and its message count (empty: nothing poisoned)."""
        with self.queues() as qs:
            names = [q.name for q in qs.list_queues() if q.name.endswith("-poison")]
            counts = {n: qs.get_queue_client(n).get_queue_properties().approximate_message_count
                      for n in names}
            return {n: c for n, c in counts.items() if c}


@dataclass
class App:
    """function_app.py in the local runner, as a separate process."""

    base: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def auth(self, tenants: list[str] | None = None, roles: list[str] | None = None, **kw: Any) -> dict[str, str]:
        return bearer(self.env, tenants, roles, **kw)

    def request(self, method: str, path: str, *, tenants: list[str] | None = None, roles: list[str] | None = None,
                headers: dict[str, str] | None = None, anonymous: bool = False, **kw: Any) -> httpx.Response:
        """An HTTP call as a client makes it: by default an admin identity; `tenants=` for a tenant's caller."""
        hdrs = {} if anonymous else self.auth(tenants, roles)
        hdrs.update(headers or {})
        return self.client.request(method, path, headers=hdrs, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, **kw)

    def configure(self, tenant: str, config: dict[str, Any]) -> dict[str, Any]:
        """PUT the tenant's stream config (created or replaced), as the tenant; the stored config."""
        r = self.put(f"/stream-config/{tenant}", json=config, tenants=[tenant])
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def run_function(self, name: str, input_: str | None = None) -> None:
        """Run a timer or queue function now, through the host's admin API (202: started)."""
        r = self.client.post(f"/admin/functions/{name}", json={"input": input_} if input_ is not None else {})
        assert r.status_code == 202, (r.status_code, r.text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.client.close()
        services.stop(self.proc)


def create_topic(broker: str, topic: str, partitions: int = 1) -> None:
    """Create a topic (as Event Hubs are provisioned); one that exists already is fine."""
    services.create_topics(broker, topic, partitions=partitions)


def delete_topic(broker: str, topic: str) -> None:
    """Delete a topic (an operator removing an event hub)."""
    services.delete_topics(broker, topic)


def topic_names(broker: str) -> set[str]:
    """The topics the broker has."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"names-{uuid.uuid4().hex[:8]}"})
    try:
        return set(consumer.list_topics(timeout=10).topics)
    finally:
        consumer.close()


def topic_records(broker: str, topic: str, expect: int = 0, timeout: float = 10.0,
                  settle: float = 0.5, with_value: bool = False,
                  with_place: bool = False) -> list[dict[str, str]]:
    """The headers of every record of `topic`, read from the beginning of each partition: until
    `expect` records arrived (or `timeout`), then `settle` seconds more for any late duplicate.
    `with_value`: each with its value too, as text under "value"; `with_place`: its key, partition and
    offset under "key", "partition", "offset" (text)."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"sys-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 20,
                         "logger": logging.getLogger("tests.kafka")})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[dict[str, str]] = []
        deadline, until = time.monotonic() + timeout, None
        while time.monotonic() < (until or deadline):
            if until is None and len(out) >= expect:
                until = time.monotonic() + settle
            for m in consumer.consume(500, timeout=0.05):
                if m.error() is None:
                    record = {k: v.decode() for k, v in (m.headers() or [])}
                    if with_value:
                        record["value"] = (m.value() or b"").decode()
                    if with_place:
                        record.update(key=(m.key() or b"").decode(), partition=str(m.partition()),
                                      offset=str(m.offset()))
                    out.append(record)
        return out
    finally:
        consumer.close()


def _absent(stack: Stack) -> dict[str, str]:
    """Settings of the stand-ins the stack does not run, pointed at a port nothing listens on. The
    sample's are fixed ports (6379, 9092, ...) where a developer's `make run` may be serving: a test
    whose stack leaves a service out must find it unreachable, not someone else's."""
    given = stack.settings
    out: dict[str, str] = {}
    for name in ("redis", "azurite", "cosmos", "kafka"):
        spec = services.SPECS[name]
        closed = spec.settings({p: services.free_port() for p in spec.port_names})
        if not set(closed) & set(given):
            out.update(closed)
    return out


def app_env(stack: Stack, work: Path, **overrides: str) -> dict[str, str]:
    """The app's settings: local.settings.sample.json, pointed at the stack, with Azure's auth rules
    (a caller identity on every protected route; `make run` adds `+local-open`)."""
    env = {**SAMPLE_SETTINGS, **_absent(stack), **stack.settings,
           "AUTH_MODE": "jwt",
           "VECTOR_SQLITE_PATH": str(work / "vector.db"),
           "LOCAL_TOKENIZER_PATH": str(ROOT / SAMPLE_SETTINGS["LOCAL_TOKENIZER_PATH"])}
    env.update(overrides)
    return env


def start_app(env: dict[str, str], work: Path, *args: str, timeout: float = 60.0) -> App:
    """Start the runner on a free port and wait until the host says Running."""
    work.mkdir(parents=True, exist_ok=True)
    port = services.free_port()
    log_path = work / f"devhost-{port}.log"
    # The runner reads local.settings.json for anything the environment does not set: give it an
    # empty one so that a developer's own file never leaks into a test.
    settings_file = work / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
    child_env = {k: v for k, v in os.environ.items() if k not in SAMPLE_SETTINGS}
    child_env.update(env)
    child_env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--port", str(port), "--settings", str(settings_file),
         "--state-dir", str(work / "devhost-state"), *args],
        cwd=ROOT, env=child_env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        stdin=subprocess.DEVNULL, start_new_session=True)
    app = App(f"http://127.0.0.1:{port}", env, proc, log_path)
    APP_LOGS.append(log_path)

    def running() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"devhost exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            return app.client.get("/admin/host/status", timeout=1).json().get("state") == "Running"
        except (httpx.TransportError, ValueError):
            return False

    try:
        wait_for(running, timeout, 0.1, "devhost running")
    except BaseException:
        app.stop()
        raise
    return app


@contextmanager
def own_stack(work: Path, names: Iterable[str] = ("redis", "azurite", "cosmos", "kafka")) -> Iterator[Stack]:
    """Stand-ins of the test's own (the session app's change feed and queues are not shared), stopped
    on the way out."""
    stack = Stack(work)
    try:
        yield stack.start(names)
    finally:
        stack.stop()


@contextmanager
def own_stack_and_app(work: Path, names: Iterable[str], *args: str, **overrides: str) -> Iterator[tuple[Stack, App]]:
    """A stack of the test's own (`names`) and an app on it (runner `args`, setting `overrides`), both
    stopped on the way out."""
    with own_stack(work / "stack", names) as stack, \
            app_running(app_env(stack, work / "app", **overrides), work / "app", *args) as app:
        yield stack, app


@contextmanager
def app_running(env: dict[str, str], work: Path, *args: str) -> Iterator[App]:
    """An app started on `env` (`start_app`), stopped on the way out."""
    app = start_app(env, work, *args)
    try:
        yield app
    finally:
        app.stop()
