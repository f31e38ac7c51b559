"""The layer contracts of shared/ (pyproject.toml [tool.importlinter]; docs/architecture.md), run by
import-linter: the suite fails when an import runs back up a layer, makes a cycle, ties two sibling
layers together, or reaches azure.functions, opencensus or opentelemetry / azure.monitor from anywhere but the one
module allowed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = "from importlinter.cli import lint_imports; raise SystemExit(lint_imports(no_cache=True, no_logo=True))"


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LINT], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept() -> None:
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tests").mkdir()
    for name in ("__init__.py", "architecture_contracts.py"):
        shutil.copy(ROOT / "tests" / name, tmp_path / "tests" / name)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(("module", "line", "expected"), [
    # an upward import
    ("core/filters.py", "from shared.delivery import pipeline", "shared.core is not allowed to import shared.delivery"),
    # two siblings tied together
    ("destinations/analytics.py", "from shared.observability import telemetry",
     "shared.destinations is not allowed to import shared.observability"),
    # Azure Functions types outside the adapter
    ("http/adapter.py", "import azure.functions as func", "shared.http.adapter (l."),
    # each telemetry backend imports its own SDK only
    ("observability/telemetry/appinsights.py", "from azure.monitor.opentelemetry import configure_azure_monitor",
     "shared.observability.telemetry.appinsights (l."),
    ("observability/telemetry/aggregate.py", "from opentelemetry.sdk.metrics import MeterProvider",
     "shared.observability.telemetry.aggregate (l."),
    ("observability/telemetry/azuremonitor.py", "from opencensus.metrics import transport",
     "shared.observability.telemetry.azuremonitor (l."),
    # a cycle inside a package (enrich imports ids)
    ("core/ids.py", "from shared.core import enrich", "No cycles are allowed in shared.core"),
])
def test_each_kind_of_violation_breaks_a_contract(tmp_path: Path, module: str, line: str, expected: str) -> None:
    root = _copy(tmp_path)
    path = root / "shared" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    run = _lint(root)
    assert run.returncode == 1 and expected in run.stdout, run.stdout
