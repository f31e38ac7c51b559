"""A local.settings.json made by an older `make run` (copied from the sample once) lacks the settings added
since: the runner takes those from local.settings.sample.json and names them, so every function still
loads (README, "make run")."""
from __future__ import annotations

from pathlib import Path

from tests.system.harness import app_env, own_stack, start_app


def test_a_setting_missing_from_local_settings_comes_from_the_sample(tmp_path: Path) -> None:
    with own_stack(tmp_path / "stack", ("redis", "azurite", "cosmos", "kafka")) as stack:
        env = app_env(stack, tmp_path / "app")
        del env["BACKFILL_QUEUE"]  # in neither the environment nor the (empty) local.settings.json
        app = start_app(env, tmp_path / "app")
        try:
            names = {f["name"] for f in app.client.get("/admin/functions").json()}
            assert "run_backfill" in names  # its trigger names %BACKFILL_QUEUE%
            log = app.log()
            assert "using the sample's values for: BACKFILL_QUEUE" in log, log[-2000:]
            assert "not loaded" not in log
        finally:
            app.stop()
