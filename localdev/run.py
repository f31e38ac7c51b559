"""`make run`: start the local stand-ins, serve function_app.py with the local runner, and stop the
stand-ins when the runner stops, however `make run` ends.

`python -m localdev.run [SERVICE...]` (default: every stand-in). The runner is a child process in the
same process group, with the same terminal, so Ctrl+C and a closing terminal's hangup reach it
directly. This process passes SIGINT, SIGTERM and SIGHUP on to it as SIGTERM (a `kill` of make
reaches only make's child, this process), waits for it to stop (SIGKILL after STOP_GRACE_SECONDS),
then stops the stand-ins. A shell's EXIT trap did this before, and missed two ways to end: bash runs
no EXIT trap when a hangup or SIGTERM kills it, and defers any other trap until its foreground
command ends, which a `kill` of make never made happen.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

from localdev import services

STOP_GRACE_SECONDS = 30.0  # the runner's own stop (its drivers, clients) takes a few seconds


def serve(names: list[str]) -> int:
    """The runner's exit status; the stand-ins in `names` are stopped whatever it was."""
    child: subprocess.Popen[bytes] | None = None
    asked: list[float] = []  # when a stop was first passed on

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        if not asked:
            asked.append(time.monotonic())
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, pass_on)
    try:
        services.up(names)
        if asked:  # stopped while the stand-ins started: no runner
            return 128 + signal.SIGTERM
        child = subprocess.Popen([sys.executable, "-m", "devhost"])
        while True:
            try:
                return child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if asked and time.monotonic() - asked[0] > STOP_GRACE_SECONDS:
                    child.kill()
    finally:
        services.down(names)


def main(argv: list[str] | None = None) -> None:
    names = list(argv if argv is not None else sys.argv[1:]) or list(services.DEFAULT_PORTS)
    unknown = sorted(set(names) - set(services.DEFAULT_PORTS))
    if unknown:
        raise SystemExit(f"unknown service(s) {unknown}; known: {sorted(services.DEFAULT_PORTS)}")
    sys.exit(serve(names))


if __name__ == "__main__":
    main()
