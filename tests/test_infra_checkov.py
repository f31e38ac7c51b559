"""infra/ passes checkov's Bicep checks (offline) with every suppression justified inline.

Runs infra/check.sh, the same command CI runs. checkov lives in its own venv (.venv-checkov,
requirements-checkov.txt) because it pins packaging<24 and pytest needs packaging>=24; if it is
missing this test fails with the install command rather than skipping.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CHECK = INFRA / "check.sh"
SKIP = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?")
SUMMARY = re.compile(r"checkov bicep: passed=(\d+) failed=(\d+) skipped=(\d+) parsing_errors=(\d+)")


def checkov_command() -> str:
    """Same lookup as check.sh: $CHECKOV, <repo>/.venv-checkov/bin/checkov, PATH."""
    local = ROOT / ".venv-checkov" / "bin" / "checkov"
    found = os.environ.get("CHECKOV") or (str(local) if local.exists() else shutil.which("checkov"))
    assert found, "checkov missing: python3.11 -m venv .venv-checkov && .venv-checkov/bin/pip install -r requirements-checkov.txt"
    return found


def run_check(infra_dir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    env = {**os.environ, "CHECKOV": checkov_command()}
    proc = subprocess.run(
        ["bash", str(infra_dir / "check.sh")], capture_output=True, text=True, env=env, timeout=300
    )
    match = SUMMARY.search(proc.stdout)
    assert match, f"no summary from check.sh (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    counts = dict(zip(("passed", "failed", "skipped", "parsing_errors"), map(int, match.groups())))
    return proc, counts


@pytest.fixture(scope="module")
def report() -> dict:
    proc, counts = run_check(INFRA)
    print(f"checkov bicep: {counts}")
    return {"proc": proc, "counts": counts}


@pytest.fixture(scope="module")
def full_report() -> list[dict]:
    """checkov's JSON with passed and skipped checks (check.sh runs --quiet: failures only)."""
    proc = subprocess.run(
        [checkov_command(), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )
    data = json.loads(proc.stdout)
    return data if isinstance(data, list) else [data]


def test_checkov_passes_with_no_failed_check_and_no_parse_error(report: dict) -> None:
    counts = report["counts"]
    assert counts["failed"] == 0, report["proc"].stdout[-4000:]
    assert counts["parsing_errors"] == 0, report["proc"].stderr[-2000:]
    assert counts["passed"] >= 30, "fewer checks ran than expected: a module may have dropped out"
    assert report["proc"].returncode == 0


def test_every_suppression_is_justified_and_used(report: dict, full_report: list[dict]) -> None:
    """Each inline skip has a reason, and checkov actually skipped that check (no stale skips)."""
    inline: set[tuple[str, str]] = set()
    for path in INFRA.rglob("*.bicep"):
        for line in path.read_text().splitlines():
            if match := SKIP.search(line):
                check_id, reason = match.group(1), (match.group(2) or "").strip()
                assert len(reason) >= 30, f"{path.name}: {check_id} needs a real justification"
                inline.add((path.name, check_id))
    results = [r for rep in full_report for r in rep["results"]["skipped_checks"]]
    skipped = {(Path(r["file_path"]).name, r["check_id"]) for r in results}
    assert inline, "expected inline suppressions in infra/"
    assert inline == skipped, f"unused: {sorted(inline - skipped)}; not inline: {sorted(skipped - inline)}"
    assert all(r["check_result"].get("suppress_comment") for r in results)
    assert report["counts"]["skipped"] == len(results)


def test_check_fails_when_a_suppression_is_removed(tmp_path: Path) -> None:
    """The gate can fail: drop one justified skip from a copy of a module and the check goes red.

    Only check.sh and that one module are copied, to keep this second checkov run short.
    """
    copy = tmp_path / "infra"
    (copy / "modules").mkdir(parents=True)
    shutil.copy2(CHECK, copy / "check.sh")
    shutil.copy2(INFRA / "modules" / "redis.bicep", copy / "modules" / "redis.bicep")
    target = copy / "modules" / "redis.bicep"
    lines = target.read_text().splitlines(keepends=True)
    kept = [line for line in lines if "checkov:skip=CKV_AZURE_89" not in line]
    assert len(kept) == len(lines) - 1
    target.write_text("".join(kept))
    proc, counts = run_check(copy)
    assert counts["failed"] == 1
    assert proc.returncode != 0
    assert "CKV_AZURE_89" in proc.stdout
