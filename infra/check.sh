#!/usr/bin/env bash
# Lint infra/ with checkov's Bicep checks, offline (no Bicep compiler runs here).
# Fails on any failed check and on any Bicep file checkov could not parse (an unparsed file
# would otherwise pass silently). Suppressions live inline in the Bicep as
#   // checkov:skip=CKV_AZURE_XX: reason
# inside the resource body; pycep (checkov's Bicep parser) accepts at most 4 consecutive
# comment lines in an object, so spread long lists between properties.
#
# checkov is found as $CHECKOV, else <repo>/.venv-checkov/bin/checkov, else on PATH. It lives in
# its own venv because checkov pins packaging<24 while pytest 9 needs packaging>=24.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
checkov="${CHECKOV:-}"
if [[ -z "$checkov" ]]; then
  if [[ -x "$root/.venv-checkov/bin/checkov" ]]; then
    checkov="$root/.venv-checkov/bin/checkov"
  else
    checkov="$(command -v checkov || true)"
  fi
fi
if [[ -z "$checkov" ]]; then
  echo "checkov not found: python3.11 -m venv .venv-checkov && .venv-checkov/bin/pip install -r requirements-checkov.txt" >&2
  exit 2
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

set +e
"$checkov" -d "$here" --framework bicep --skip-download --quiet --compact \
  -o cli -o json --output-file-path "console,$out/results_json.json"
status=$?
set -e

# Summary line and parse errors from the JSON report (the CLI output hides parse errors).
set +e
python3 - "$out/results_json.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
summary = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0}
errors = []
for report in reports:
    for key in summary:
        summary[key] += int(report.get("summary", {}).get(key, 0))
    errors += report.get("results", {}).get("parsing_errors", [])
print("checkov bicep: passed={passed} failed={failed} skipped={skipped} parsing_errors={parsing_errors}".format(**summary))
for path in errors:
    print(f"parse error: {path}", file=sys.stderr)
sys.exit(1 if summary["failed"] or summary["parsing_errors"] or not summary["passed"] else 0)
PY
py_status=$?
# Keep the JSON report for callers that inspect it (tests/test_infra_checkov.py).
if [[ -n "${CHECKOV_JSON_OUT:-}" ]]; then cp "$out/results_json.json" "$CHECKOV_JSON_OUT"; fi
exit $(( status != 0 ? status : py_status ))
