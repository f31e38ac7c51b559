"""Start/stop the local Cosmos DB server (localdev/cosmos/server.js) from Python.

Used by tests and benchmarks; dev and CI only.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

# The public, well-known emulator key. The local server accepts any base64 key.
LOCAL_COSMOS_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)

SERVER_JS = Path(__file__).resolve().parent / "cosmos" / "server.js"
READY_TIMEOUT_S = 20.0


class CosmosServerError(RuntimeError):
    pass


def start_cosmos(
    port: int, workdir: Path, *, https: bool = False, host: str = "127.0.0.1"
) -> subprocess.Popen[bytes]:
    """Launch the server on `port` and block until it prints READY.

    stderr goes to `workdir/cosmos-server.log` (a pipe nobody drains could fill up and
    stall the server); it is quoted in the error if the server dies or times out.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "cosmos-server.log"
    cmd = ["node", str(SERVER_JS), "--port", str(port), "--host", host]
    if https:
        cmd.append("--https")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    buf = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop(proc)
            raise CosmosServerError(
                f"cosmos server not ready after {READY_TIMEOUT_S:.0f}s: {_tail(log_path)}"
            )
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:  # EOF: the process is exiting
                proc.wait(timeout=5)
            buf += chunk
            if b"READY " in buf and b"\n" in buf.split(b"READY ", 1)[1]:
                return proc
        if proc.poll() is not None:
            raise CosmosServerError(
                f"cosmos server exited with code {proc.returncode}: {_tail(log_path)}"
            )


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the server by PID, then kill it if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if proc.stdout is not None:
        proc.stdout.close()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no stderr>"
    return text[-limit:] or "<empty stderr>"
