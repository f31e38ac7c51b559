"""What may leave the process: dimension values that look like identifiers, text without secrets.

Only catalogued dimension names reach a record (`catalogue.LOG_DIMENSIONS`); a value must look like
an identifier (anything else, or anything resembling a key or connection string, becomes
"[redacted]"); free text (messages, exception texts) is scrubbed of `Key=...`, `Bearer ...`, URL
credentials and long base64 runs. Every backend applies these before export.
"""
from __future__ import annotations

import re
from enum import Enum
from typing import Any, Mapping

from shared.observability.telemetry.catalogue import LOG_DIMENSIONS

REDACTED = "[redacted]"

_SAFE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:@/{}\-]{0,127}")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{40,}={0,2}")
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|InstrumentationKey|"
                r"password|passwd|pwd|secret|token|sig|apikey|api_key|key)(\s*[=:]\s*)([^;&\s,\"']+)"),
     r"\1\2" + REDACTED),
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/\-]+=*"), "Bearer " + REDACTED),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]*:[^/\s@]*@"), r"\1" + REDACTED + "@"),
    (_LONG_TOKEN, REDACTED),
)


def redact(text: str) -> str:
    """Scrub anything that looks like a credential from free text (log messages, exceptions)."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def label(value: Any) -> str:
    """A dimension value fit for export: an identifier-like string or "[redacted]"."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool | int | float):
        return str(value)
    if not isinstance(value, str) or not _SAFE_VALUE.fullmatch(value) or redact(value) != value:
        return REDACTED
    return value


def clean_dimensions(dims: Mapping[str, Any]) -> dict[str, str]:
    """Only catalogued names, only sanitised values, no None."""
    return {k: label(v) for k, v in dims.items() if k in LOG_DIMENSIONS and v is not None}
