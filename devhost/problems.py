"""Problem details (RFC 9457) for what the runner itself answers: its admin API and the requests its
HTTP server refuses before any function sees them."""
from __future__ import annotations

import json

from aiohttp import web

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(status=status, body=json.dumps(body), content_type=PROBLEM_JSON)
