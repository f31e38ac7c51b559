"""What the runner's HTTP server refuses itself is problem details too (issue 12, item 8).

Raw sockets: an HTTP client library would refuse to send most of these requests."""
from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import pytest

from tests.system.harness import App

OK = b"GET /health HTTP/1.1\r\nHost: x\r\n"
CASES = {
    "one header over 32 KiB": (OK + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
    "headers over 32 KiB in all": (OK + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 8000) for i in range(6)) + b"\r\n", 431),
    "more than 100 headers": (OK + b"".join(b"X-%d: a\r\n" % i for i in range(120)) + b"\r\n", 431),
    "CR in a header value": (OK + b"X-A: a\rb\r\n\r\n", 400),
    "LF in a header value": (OK + b"X-A: a\nb: c\r\n\r\n", 400),
    "CRLF injected": (OK + b"X-A: a\r\nInjected : b\r\n\r\n", 400),
    "NUL in a header value": (OK + b"X-A: a\x00b\r\n\r\n", 400),
    "a space in a header name": (OK + b"X A: b\r\n\r\n", 400),
    "request line over 8 KiB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "bad method": (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
}


def exchange(port: int, request: bytes, timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; read one response (status, headers, body of Content-Length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading all of an oversized request
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                if len(body) >= int(headers.get("content-length", "0")):
                    return int(lines[0].split()[1]), headers, body[: int(headers.get("content-length", "0"))]
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    raise AssertionError(f"no complete response: {data[:200]!r}")


@pytest.mark.parametrize("name", CASES)
def test_a_request_the_server_refuses_is_problem_details(app: App, name: str) -> None:
    request, status = CASES[name]
    port = urlparse(app.base).port
    assert port is not None
    code, headers, body = exchange(port, request)
    assert code == status, (code, body)
    assert headers["content-type"] == "application/problem+json", headers
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["type"] == "about:blank"
    assert "aaaa" not in problem["detail"] and "X-A" not in problem["detail"]  # no echo of the request
    # The server still serves the next client.
    assert exchange(port, OK + b"Connection: close\r\n\r\n")[0] == 200
