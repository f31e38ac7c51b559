"""`make watch` (python -m devhost.top) as a person sees it: the app runs as under `make run`
(AUTH_MODE=jwt+local-open, no token), the view runs in a terminal (tmux), events are posted, and the
screen shows the tenant's counts, its destination and the retry queue."""
from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.system.harness import ROOT, App, Stack, app_env, start_app, tenant, wait_for


@pytest.fixture
def local_open_app(stack: Stack, tmp_path: Path) -> Iterator[App]:
    running = start_app(app_env(stack, tmp_path, AUTH_MODE="jwt+local-open"), tmp_path)
    try:
        yield running
    finally:
        running.stop()


class Tmux:
    """A tmux server of our own (its own socket), so nothing else's sessions are touched."""

    def __init__(self) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is missing: `make test` installs it (Debian package tmux)")
        self.socket = f"grc-watch-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], check=True, capture_output=True,
                              text=True, timeout=30).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "watch")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def row(screen: str, first: str) -> list[str]:
    """The cells of the table row starting with `first` (columns are separated by 2+ spaces)."""
    for line in screen.splitlines():
        cells = [c.strip() for c in line.strip().split("  ") if c.strip()]
        if cells and cells[0] == first:
            return cells
    return []


def test_the_watch_view_shows_what_was_posted(local_open_app: App) -> None:
    app, t = local_open_app, tenant("watch")
    # A filter, so some events are filtered: only RISK_CREATED passes.
    r = app.put(f"/stream-config/{t}", json={"tenantId": t, "enabled": True,
                                             "filters": [{"eventTypes": ["RISK_CREATED"]}]},
                anonymous=True)  # local-open: no token, acts as admin
    assert r.status_code in (200, 201), r.text
    ev = {"tenantId": t, "source": "FRONTEND_APP", "action": "CREATE", "data": {"n": 1}}
    events = [{**ev, "eventType": "RISK_CREATED"}] * 3 + [{**ev, "eventType": "CONTROL_TESTED"}] + \
             [{**ev, "eventType": "RISK_CREATED", "action": "NOT_AN_ACTION"}] * 2
    r = app.post("/events/bulk", json={"events": events}, anonymous=True)
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["accepted"] * 3 + ["filtered"] + ["rejected"] * 2

    tmux = Tmux()
    try:
        # The terminal decides the width (pytest may export COLUMNS/LINES of its own).
        cmd = (f"cd {ROOT} && env -u COLUMNS -u LINES PYTHONPATH={ROOT} {sys.executable} -m devhost.top "
               f"--url {app.base} --interval 1 {t}")
        tmux.run("new-session", "-d", "-s", "watch", "-x", "220", "-y", "50", cmd)

        last: list[str] = [""]

        def shown() -> str | None:
            screen = last[0] = tmux.screen()
            cells = row(screen, t)
            # tenant | accepted | filtered | rejected | failed | ...: counts and per-second rates (1 min)
            if cells[:5] == [t, "3 (0.05/s)", "1 (0.02/s)", "2 (0.03/s)", "0"]:
                return screen
            return None

        try:
            screen = wait_for(shown, 30, 0.5, "the tenant's row on the watch screen")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe screen:\n{last[0]}") from None
    finally:
        tmux.close()
    assert "health healthy" in screen or "health degraded" in screen
    assert "retry queue 0 message(s), poison 0" in screen
    dest = [r for r in (row(line, t) for line in screen.splitlines()) if len(r) == 5]
    assert [t, "redis", "3", "0", "0"] in dest, screen
    assert "none" in row(screen, t), "no alert holds for this tenant"
