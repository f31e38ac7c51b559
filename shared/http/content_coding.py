"""Request bodies sent with `Content-Encoding: gzip`.

The Functions host hands the worker a request body as it came over the wire: it does not decode a
content coding (azure-functions-host and core-tools issues on gzip'd request bodies; the local runner
keeps that, devhost/http_driver.py). So the app decodes it itself. A backend service posting bulks of
1,000 events for many tenants can send them gzip'd (JSON of events shrinks several times).

The body limits of README ("Limits") are on the decoded body, so a small compressed body cannot
unpack into more than the limit: decoding stops at the limit + 1 byte (413). Any other coding is
refused with 415 and `Accept-Encoding` naming what is taken (RFC 9110, section 15.5.16), where it
would otherwise have been read as malformed JSON.
"""
from __future__ import annotations

import zlib

from shared.http.types import ProblemError

ACCEPTED = "gzip"  # the Accept-Encoding of a 415 for another coding
_IDENTITY = ("", "identity")
_GZIP = ("gzip", "x-gzip")  # x-gzip: RFC 9110 section 8.4.1.3 says to read it as gzip


def _codings(header: str | None) -> list[str]:
    """The codings in the order they were applied (RFC 9110: listed in that order), identity dropped."""
    return [c for c in (part.strip().lower() for part in (header or "").split(",")) if c not in _IDENTITY]


def decoded_body(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """`body` without its content coding; 415 for a coding other than gzip, 400 for a body that is not
    gzip, 413 when the decoded body is larger than `max_bytes`."""
    codings = _codings(content_encoding)
    if not codings:
        return body
    unknown = [c for c in codings if c not in _GZIP]
    if unknown:
        raise ProblemError(415, "Unsupported Media Type",
                           f"Content-Encoding {', '.join(unknown)} is not supported; send the body as it "
                           "is or gzip'd", headers={"Accept-Encoding": ACCEPTED})
    for _ in codings:  # applied in order, so undone in reverse; all of them gzip
        body = _gunzip(body, max_bytes)
    return body


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """Every gzip member of `data` (a gzip file may hold several), at most `max_bytes` in all."""
    out: list[bytes] = []
    size = 0
    rest = data
    try:
        while True:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            # max_length stops a body that decodes to far more than the limit (a "zip bomb") early.
            chunk = d.decompress(rest, max_bytes - size + 1)
            size += len(chunk)
            out.append(chunk)
            if size > max_bytes:
                raise too_large(max_bytes, "the decoded body")
            if not d.eof:
                raise ProblemError(400, "Bad Request", "the body is not valid gzip: it ends before its last "
                                   "member does", errors=[_error("truncated gzip")])
            rest = d.unused_data
            if not rest:
                return b"".join(out)
    except zlib.error as exc:
        raise ProblemError(400, "Bad Request", f"the body is not valid gzip: {exc}",
                           errors=[_error("not gzip")]) from exc


def too_large(max_bytes: int, what: str = "the body") -> ProblemError:
    return ProblemError(413, "Content Too Large", f"{what} is larger than {max_bytes} bytes",
                        maxBytes=max_bytes)


def _error(detail: str) -> dict[str, str]:
    return {"pointer": "", "field": "(body)", "detail": detail}
