"""CPU time of processes (Linux /proc) and the machine's load, for benchmarks that share a machine.

On a machine shared with other work a rate moves with their load; the CPU a side spends per event
much less. Benchmarks print both, with the load average before and after.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of a process, in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def load() -> str:
    """The 1/5/15-minute load average, as printed beside each figure."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


class Meter:
    """Wall-clock and CPU seconds of a stretch of work: this process plus other processes (e.g. Redis)."""

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or []

    def __enter__(self) -> "Meter":
        self._wall, self._own, self._other = time.perf_counter(), time.process_time(), cpu_seconds(self.pids)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.own = time.process_time() - self._own
        self.other = cpu_seconds(self.pids) - self._other

    @property
    def cpu(self) -> float:
        return self.own + self.other
