"""The offline embedder for the vector tests, loaded once per test process (0.4 s, 23 MB)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from localdev.fetch_tokenizer import DEFAULT_DEST, ensure_tokenizer
from shared.vector.local_minilm import LocalMiniLM

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / DEFAULT_DEST


@lru_cache(maxsize=1)
def local_embedder() -> LocalMiniLM:
    # Fetches tokenizer.json (sha256-checked) on a fresh clone; a no-op once it is there.
    return LocalMiniLM(ensure_tokenizer(TOKENIZER))
