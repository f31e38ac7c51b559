"""Mint a development token for the local runner:

    python -m shared.security.devtoken --tenant acme [--tenant globex] [--role Events.Admin]
    curl -H "Authorization: Bearer $(python -m shared.security.devtoken --tenant acme)" ...

Signs with AUTH_DEV_SIGNING_KEY from the environment or local.settings.json; refuses when it is
empty, so it is useless against an app in Azure.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from shared.core.settings import Settings
from shared.security.identity import mint_dev_token


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m shared.security.devtoken", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    ap.add_argument("--tenant", action="append", default=[])
    ap.add_argument("--role", action="append", default=[])
    ap.add_argument("--subject", default="local-dev")
    ap.add_argument("--ttl", type=int, default=3600)
    opts = ap.parse_args(argv)
    env = {}
    if opts.settings.exists():
        env.update(json.loads(opts.settings.read_text()).get("Values", {}))
    env.update(os.environ)
    settings = Settings.from_env(env)
    print(mint_dev_token(settings, opts.subject, tenants=opts.tenant, roles=opts.role or None,
                         ttl_seconds=opts.ttl))


if __name__ == "__main__":
    main()
