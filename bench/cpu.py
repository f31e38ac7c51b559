"""CPU time of processes (Linux /proc) and the machine's load, for benchmarks that share a machine.

On a machine shared with other work a rate moves with their load; the CPU a side spends per event
much less. Benchmarks print both, with the load average before and after.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
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


SPEED_LOOP = 3_000_000


def speed() -> float:
    """The machine's speed now: CPU milliseconds of a fixed pure-Python loop, median of 3.

    The load average says how many processes wanted the cores, not how fast a core runs for the one
    that has it. On these VMs the same loop took 83 to 114 ms within half a minute, with the load
    under 1, while the runner's CPU per single POST ranged 434-731 us on one code in ten minutes
    (docs/performance.md, 2026-12-07 late night): a figure printed with this one can be told apart
    from a slow phase of the machine. CPU time, not wall-clock, so waiting for a core does not count.
    About 0.3 s; never inside a window.
    """
    def once() -> float:
        start, x = time.process_time(), 0
        for i in range(SPEED_LOOP):
            x += i & 7
        return (time.process_time() - start) * 1000

    return statistics.median(once() for _ in range(3))


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


@dataclass
class SideBySide:
    """Events/s of a raw client and of ours, measured in alternating rounds so that machine noise
    hits both; the medians and their ratio."""

    raw_rates: list[float]
    our_rates: list[float]

    @property
    def raw(self) -> float:
        return statistics.median(self.raw_rates)

    @property
    def ours(self) -> float:
        return statistics.median(self.our_rates)

    @property
    def ratio(self) -> float:
        return self.ours / self.raw

    def rate_lines(self, raw_name: str, our_name: str) -> list[str]:
        """The two sides' median events/s with every round's, names aligned."""
        width = max(len(raw_name), len(our_name)) + 1
        return [f"{raw_name + ':':<{width}} {self.raw:,.0f} events/s ({per_round(self.raw_rates)})",
                f"{our_name + ':':<{width}} {self.ours:,.0f} events/s ({per_round(self.our_rates)})"]


def per_round(rates: list[float]) -> str:
    return "rounds: " + ", ".join(f"{r:,.0f}" for r in rates)
