"""`make run` stops what it started, however it ends (README, "Two commands": the stand-ins are
"stopped when `make run` exits").

The real `make run` in this checkout, in a terminal (a pseudo-terminal), ended as a user ends it:
Ctrl+C; the terminal closing, with a shell in it (the shell passes the hangup on to its jobs) and with
`make run` as the terminal's own command (a tmux pane's or an IDE's: only make is signalled); a `kill`
of make; a `kill` of the runner. After each, no stand-in, runner or make process is left, and the
runner stopped itself (its log line) rather than being killed.

`make run` serves on fixed ports (README); when one is taken on this machine (a developer's own
`make run`), the test is skipped, saying so. Other runners (the suite's own app) are left alone: only
the processes this `make run` started are watched.
"""
from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from typing import Callable

import pytest

from localdev import services
from tests.system.harness import ROOT

PORTS = sorted({3003, *(p for ports in services.DEFAULT_PORTS.values() for p in ports.values())})
STARTED = b"HTTP functions on"
START_SECONDS = 180.0
BY_SIGTERM = "INFO devhost: stopped (SIGTERM)"  # the runner's log line: it stopped itself
STOP_SECONDS = 45.0  # the runner stops in a few seconds, the stand-ins in a few more


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # an exited child not yet reaped: gone
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while read
        return False


def _started_by(leader: int) -> set[int]:
    """Every process `make run` started: the terminal's process and its descendants (make, the
    runner), and the stand-ins, which run in sessions of their own (their PIDs in .localdev/pids)."""
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for row in rows:
        if row.strip():
            pid, ppid = map(int, row.split())
            children.setdefault(ppid, []).append(pid)
    found, todo = set(), [leader]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    for pidfile in (services.STATE_DIR / "pids").glob("*.pid"):
        found.add(int(pidfile.read_text()))
    return found


def _left(pids: set[int]) -> list[str]:
    """What is still running of `pids`, and the fixed ports still taken."""
    return [f"pid {p}" for p in sorted(pids) if _running(p)] + [
        f"port {p}" for p in PORTS if services.port_open(p)]


@pytest.fixture(autouse=True)
def _ports_free() -> None:
    taken = [p for p in PORTS if services.port_open(p)]
    if taken:
        pytest.skip(f"make run's ports {taken} are taken on this machine (a make run of its own?)")


class Terminal:
    """A pseudo-terminal running `command`, its output kept."""

    def __init__(self, command: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the terminal's own process, its session leader
            os.chdir(ROOT)
            os.execvp(command[0], command)
        self.output = b""
        self.closed = False

    def read(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.closed and time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:  # the other side is gone
                    return

    def wait_for(self, text: bytes, seconds: float) -> None:
        end = time.monotonic() + seconds
        while text not in self.output:
            assert time.monotonic() < end, self.output[-3000:].decode(errors="replace")
            self.read(0.5)

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def close(self) -> None:
        """The terminal window closes: its side of the pseudo-terminal goes."""
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def kill(self) -> None:
        self.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _pid_of(ours: set[int], word: str) -> int:
    """The one process of `ours` whose command line has `word` (never another runner on the machine,
    such as the suite's own)."""
    found = []
    for pid in ours:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except FileNotFoundError:
            continue
        if word.encode() in args:
            found.append(pid)
    assert len(found) == 1, (word, found)
    return found[0]


def _log(term: Terminal) -> str:
    return term.output.decode(errors="replace")


def _ends_cleanly(shell: bool, end: Callable[[Terminal, set[int]], None], stopped_line: str | None) -> None:
    term = Terminal(["bash", "--norc", "--noprofile", "-i"] if shell else ["make", "run"])
    ours: set[int] = set()
    try:
        if shell:
            term.type(b"make run\n")
        term.wait_for(STARTED, START_SECONDS)
        term.read(1.0)
        ours = _started_by(term.pid) - {term.pid}  # the terminal's own process is not make run's
        assert len(ours) >= 6, ours  # localdev.run, the runner, four stand-ins (and make under a shell)
        end(term, ours)
        ended = time.monotonic()
        while _left(ours):
            assert time.monotonic() < ended + STOP_SECONDS, f"left: {_left(ours)}\n{_log(term)[-3000:]}"
            term.read(0.5)
        print(f"everything stopped {time.monotonic() - ended:.1f} s after the end")
        if stopped_line is not None:  # the terminal is still there to show how the runner stopped
            term.read(1.0)
            assert stopped_line in _log(term), _log(term)[-3000:]
            assert "redis: stopped" in _log(term), _log(term)[-3000:]
    finally:
        term.kill()
        for pid in ours | _started_by(term.pid):  # never leave them to the next test
            if pid != term.pid and _running(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended meanwhile
                    pass
        for name in services.DEFAULT_PORTS:
            (services.STATE_DIR / "pids" / f"{name}.pid").unlink(missing_ok=True)
        deadline = time.monotonic() + 10
        while any(services.port_open(p) for p in PORTS) and time.monotonic() < deadline:
            time.sleep(0.2)


def test_ctrl_c_stops_the_runner_then_every_stand_in() -> None:
    _ends_cleanly(True, lambda t, _: t.type(b"\x03"), "INFO devhost: stopped (SIG")


def test_closing_the_terminal_with_its_shell_stops_everything() -> None:
    _ends_cleanly(True, lambda t, _: t.close(), None)


def test_closing_a_terminal_whose_own_command_is_make_run_stops_everything() -> None:
    _ends_cleanly(False, lambda t, _: t.close(), None)


def test_a_kill_of_make_stops_everything() -> None:
    _ends_cleanly(True, lambda t, ours: os.kill(_pid_of(ours, "make"), signal.SIGTERM), BY_SIGTERM)


def test_a_kill_of_the_runner_stops_every_stand_in() -> None:
    _ends_cleanly(True, lambda t, ours: os.kill(_pid_of(ours, "devhost"), signal.SIGTERM), BY_SIGTERM)
