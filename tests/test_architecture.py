"""The layer contracts of shared/ (pyproject.toml [tool.importlinter]; docs/architecture.md), run by
import-linter: the suite fails when an import runs back up a layer, makes a cycle, ties two sibling
layers together, or reaches azure.functions / opencensus from anywhere but the one module allowed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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


def _add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _add_line(root / "shared" / "core" / "filters.py", "from shared.delivery import pipeline  # noqa")
    run = _lint(root)
    assert run.returncode == 1
    assert "shared.core is not allowed to import shared.delivery" in run.stdout, run.stdout


def test_a_sibling_import_breaks_independence(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _add_line(root / "shared" / "destinations" / "analytics.py", "from shared.observability import telemetry  # noqa")
    run = _lint(root)
    assert run.returncode == 1
    assert "shared.destinations is not allowed to import shared.observability" in run.stdout, run.stdout


def test_azure_functions_outside_the_adapter_breaks_a_contract(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _add_line(root / "shared" / "http" / "adapter.py", "import azure.functions as func  # noqa")
    run = _lint(root)
    assert run.returncode == 1
    assert "shared.http.adapter (l." in run.stdout and "azure.functions" in run.stdout, run.stdout


def test_a_cycle_inside_a_package_breaks_a_contract(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _add_line(root / "shared" / "core" / "ids.py", "from shared.core import enrich  # noqa")  # enrich imports ids
    run = _lint(root)
    assert run.returncode == 1
    assert "No cycles are allowed in shared.core" in run.stdout, run.stdout
