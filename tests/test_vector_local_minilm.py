"""The offline embedder: real model, real tokenizer (fetched and sha256-checked)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from localdev import fetch_tokenizer
from shared.vector.local_minilm import DIMENSIONS, MAX_TOKENS, LocalMiniLM, ModelFileError
from tests.vector_support import TOKENIZER, local_embedder


async def test_vectors_are_unit_length_and_384_wide() -> None:
    vectors = await local_embedder().embed(["vendor access review failed", "fire drill completed"])
    arr = np.asarray(vectors)
    assert arr.shape == (2, DIMENSIONS)
    assert np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)


async def test_batching_keeps_input_order() -> None:
    texts = ["short", "a much longer text about segregation of duties in payment approval", "mid length text"]
    together = np.asarray(await local_embedder().embed(texts))
    alone = np.asarray([(await local_embedder().embed([t]))[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-4)


async def test_related_texts_are_closer_than_unrelated() -> None:
    a, b, c = np.asarray(await local_embedder().embed([
        "vendor access control failure", "stale third-party accounts found in access review", "quarterly fire drill"]))
    assert a @ b > a @ c + 0.2


async def test_long_text_is_truncated_at_256_tokens() -> None:
    emb = local_embedder()
    long_text = "risk " * 2000
    assert len(emb._tokenizer.encode(long_text).ids) == MAX_TOKENS
    head_only = "risk " * 300
    v_long, v_head = np.asarray(await emb.embed([long_text, head_only]))
    assert v_long @ v_head > 0.999  # everything past token 256 is ignored


async def test_empty_input_embeds_nothing() -> None:
    assert await local_embedder().embed([]) == []


def test_model_file_with_wrong_sha256_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not the pinned model")
    with pytest.raises(ModelFileError, match="sha256"):
        LocalMiniLM(TOKENIZER, model_path=bogus)


def test_missing_tokenizer_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="fetch_tokenizer"):
        LocalMiniLM(tmp_path / "tokenizer.json")


def test_fetch_tokenizer_keeps_a_verified_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "tokenizer.json"
    shutil.copy(TOKENIZER, dest)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a verified tokenizer must not be downloaded again")

    monkeypatch.setattr(subprocess, "run", no_download)
    assert fetch_tokenizer.ensure_tokenizer(dest) == dest
    assert fetch_tokenizer.file_sha256(dest) == fetch_tokenizer.SHA256
