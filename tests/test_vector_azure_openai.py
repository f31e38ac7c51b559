"""AzureOpenAIEmbedder at its HTTP boundary.

No Azure OpenAI emulator exists, so the embedder talks to FakeAzureOpenAI (tests/vector_fakes.py),
a local FAKE HTTP server that records each request and answers in the embeddings API's shape.
The Entra ID credential is a FAKE too. These tests check the requests (path, auth, batching,
`dimensions`) and the reading of answers (order by `index`, normalisation, 429 retry).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from shared.vector.azure_openai import AzureOpenAIEmbedder
from shared.vector.base import VectorConfigError, VectorSearchError
from tests.vector_fakes import FakeAzureOpenAI, FakeTokenCredential, raw_vector


@pytest.fixture
async def fake():
    server = await FakeAzureOpenAI().start()
    yield server
    await server.stop()


async def test_batched_requests_with_key(fake: FakeAzureOpenAI) -> None:
    emb = AzureOpenAIEmbedder(fake.endpoint, "embed-deploy", "text-embedding-3-small", api_key="k-123",
                              batch_size=2)
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    vectors = await emb.embed(texts)
    await emb.close()
    assert [len(r.body["input"]) for r in fake.requests] == [2, 2, 1]
    first = fake.requests[0]
    assert first.path == "/openai/deployments/embed-deploy/embeddings"
    assert first.query["api-version"] == "2024-10-21"
    assert first.headers["api-key"] == "k-123" and "Authorization" not in first.headers
    assert "dimensions" not in first.body  # the model's own size is not re-requested
    assert (emb.model_id, emb.dimensions) == ("azure-openai:text-embedding-3-small:1536", 1536)
    # answers come back reversed: vectors must follow the `index` of each item, and be unit length
    for text, vec in zip(texts, vectors):
        raw = raw_vector(text, 1536)
        norm = math.sqrt(sum(x * x for x in raw))
        assert vec == pytest.approx([x / norm for x in raw])
        assert math.sqrt(sum(x * x for x in vec)) == pytest.approx(1.0)


async def test_shortened_dimensions_are_requested(fake: FakeAzureOpenAI) -> None:
    emb = AzureOpenAIEmbedder(fake.endpoint, "d", "text-embedding-3-small", dimensions=256, api_key="k")
    (vec,) = await emb.embed(["x"])
    await emb.close()
    assert fake.requests[0].body["dimensions"] == 256
    assert len(vec) == 256 and emb.model_id == "azure-openai:text-embedding-3-small:256"


def test_ada_cannot_shorten_vectors() -> None:
    with pytest.raises(VectorConfigError, match="cannot shorten"):
        AzureOpenAIEmbedder("https://x.openai.azure.com", "d", "text-embedding-ada-002", dimensions=256, api_key="k")


def test_settings_it_cannot_work_with_are_config_errors() -> None:
    # A VectorConfigError is what GET /search answers 503 for ("vector search is not configured").
    with pytest.raises(VectorConfigError, match="AZURE_OPENAI_ENDPOINT"):
        AzureOpenAIEmbedder("", "d", "text-embedding-3-small", api_key="k")
    with pytest.raises(VectorConfigError, match="EMBEDDING_DIMENSIONS"):
        AzureOpenAIEmbedder("https://x.openai.azure.com", "d", "some-other-model", api_key="k")


async def test_429_is_retried() -> None:
    fake = await FakeAzureOpenAI(fail_first=1).start()
    emb = AzureOpenAIEmbedder(fake.endpoint, "d", "text-embedding-3-small", api_key="k")
    try:
        assert len(await emb.embed(["x"])) == 1
    finally:
        await emb.close()
        await fake.stop()
    assert len(fake.requests) == 2


async def test_wrong_size_answer_is_an_error() -> None:
    fake = await FakeAzureOpenAI(dimensions=100).start()
    emb = AzureOpenAIEmbedder(fake.endpoint, "d", "text-embedding-3-small", api_key="k")
    try:
        with pytest.raises(VectorSearchError, match="100 dimensions"):
            await emb.embed(["x"])
    finally:
        await emb.close()
        await fake.stop()


async def test_managed_identity_bearer_token(tmp_path: Path) -> None:
    fake = await FakeAzureOpenAI(tls_dir=tmp_path).start()
    cred = FakeTokenCredential(token="fake-entra-token")
    emb = AzureOpenAIEmbedder(fake.endpoint, "d", "text-embedding-3-small", credential=cred,
                              connection_verify=False)
    try:
        await emb.embed(["x", "y"])
    finally:
        await emb.close()
        await fake.stop()
    assert cred.scopes == [("https://cognitiveservices.azure.com/.default",)]
    assert fake.requests[0].headers["Authorization"] == "Bearer fake-entra-token"
    assert "api-key" not in fake.requests[0].headers
