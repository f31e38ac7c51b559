"""An import-linter contract type for dotted external names (registered in pyproject.toml).

import-linter's graph (grimp) keeps an external package as its top-level name only: `azure`, not
`azure.functions`, so its `forbidden` contract cannot forbid one Azure SDK while allowing the others.
`forbidden_external` reads each import's source line (grimp's import details) for the full name.
"""
from __future__ import annotations

import re
from typing import Any

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

_IMPORTED = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\b|import\s+([\w.]+))")


def _imported_name(line: str) -> str | None:
    m = _IMPORTED.match(line)
    return (m.group(1) or m.group(2)) if m else None


class ForbiddenExternalContract(Contract):
    """`source_modules` (and their descendants) may not import the `forbidden` external names (a
    dotted name and everything below it), except the modules listed in `allowed_importers`."""

    type_name = "forbidden_external"

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden = fields.ListField(subfield=fields.StringField())
    allowed_importers = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        sources: list[str] = list(self.source_modules)  # type: ignore[arg-type]
        forbidden: list[str] = list(self.forbidden)  # type: ignore[arg-type]
        allowed = set(self.allowed_importers or [])  # type: ignore[arg-type]
        tops = {f.split(".")[0] for f in forbidden}
        violations: list[dict[str, Any]] = []
        for importer in sorted(graph.modules):
            if not any(importer == s or importer.startswith(s + ".") for s in sources) or importer in allowed:
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(importer) & tops):
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    name = _imported_name(detail["line_contents"]) or imported
                    if any(name == f or name.startswith(f + ".") for f in forbidden):
                        violations.append({"importer": importer, "line": detail["line_number"],
                                           "contents": detail["line_contents"].strip()})
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for v in check.metadata["violations"]:
            output.print_error(f"{v['importer']} (l. {v['line']}): {v['contents']}", bold=False)
        output.new_line()
