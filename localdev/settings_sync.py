"""Keep local.settings.json in step with local.settings.sample.json (run by `make run` / `make setup`).

The first run copies the sample. A later release may add settings (a new trigger's `%QUEUE%` among them);
a copy made before lacks them, and the runner, like the Functions host, would not bind that trigger. So
each setting the sample has and the copy lacks is added with the sample's value, and named; the user's
own values and any settings of their own are never changed. The runner itself takes a settings file as
it is, as the host takes its app settings.

    python -m localdev.settings_sync [--sample local.settings.sample.json] [--target local.settings.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sync(sample: Path, target: Path) -> list[str]:
    """Create `target` from `sample`, or add the sample's settings it lacks; the names added."""
    wanted = json.loads(sample.read_text())
    if not target.exists():
        target.write_text(sample.read_text())
        return []
    have = json.loads(target.read_text())
    values = have.setdefault("Values", {})
    added = [k for k in wanted["Values"] if k not in values]
    if added:
        values.update({k: wanted["Values"][k] for k in added})
        target.write_text(json.dumps(have, indent=2) + "\n")
    return added


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=Path, default=ROOT / "local.settings.sample.json")
    ap.add_argument("--target", type=Path, default=ROOT / "local.settings.json")
    args = ap.parse_args()
    if added := sync(args.sample, args.target):
        print(f"{args.target.name}: added {len(added)} setting(s) from the sample: {', '.join(added)}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
