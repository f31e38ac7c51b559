"""The system tier drives the app only from outside: no module in it imports the app's code."""
from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).parent
INSIDE = ("shared", "function_app")  # the app itself; devhost is only ever run as a process


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_system_module_imports_the_app_or_the_runner() -> None:
    offenders = {}
    for path in sorted(HERE.rglob("*.py")):
        bad = {m for m in _imports(path) if m.split(".")[0] in (*INSIDE, "devhost")
               or m.startswith("tests.") and not m.startswith("tests.system")}
        if bad:
            offenders[path.name] = sorted(bad)
    assert not offenders, f"system-tier modules that reach inside: {offenders}"
