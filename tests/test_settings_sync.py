"""`make run`'s local.settings.json step (localdev/settings_sync.py), run as make runs it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "local.settings.sample.json"


def run(target: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "localdev.settings_sync", "--sample", str(SAMPLE),
                           "--target", str(target)], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stderr


def test_first_run_copies_the_sample(tmp_path: Path) -> None:
    target = tmp_path / "local.settings.json"
    assert run(target) == ""
    assert target.read_text() == SAMPLE.read_text()


def test_an_older_copy_gains_the_new_settings_and_keeps_its_own_values(tmp_path: Path) -> None:
    sample = json.loads(SAMPLE.read_text())["Values"]
    older = {k: v for k, v in sample.items() if not k.startswith("BACKFILL_")}
    older["REDIS_PORT"] = "6380"  # the user's own value
    older["MY_OWN"] = "x"  # a setting of the user's own
    target = tmp_path / "local.settings.json"
    target.write_text(json.dumps({"IsEncrypted": False, "Values": older}))

    said = run(target)

    values = json.loads(target.read_text())["Values"]
    assert {k: values[k] for k in sample if k.startswith("BACKFILL_")} == \
        {k: v for k, v in sample.items() if k.startswith("BACKFILL_")}
    assert values["REDIS_PORT"] == "6380" and values["MY_OWN"] == "x"
    assert "BACKFILL_QUEUE" in said and "REDIS_PORT" not in said
    assert run(target) == ""  # in step now: nothing more to add
