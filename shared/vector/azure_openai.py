"""Production embedder: an Azure OpenAI embeddings deployment, called over REST with azure-core.

azure-core (already a dependency of every Azure SDK here) gives the retry policy that honours
`Retry-After` on 429, and bearer-token refresh for the managed identity; the `openai` package
would add size for one POST. Auth: managed identity (scope Cognitive Services) unless a key is set.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    AsyncRetryPolicy,
    AzureKeyCredentialPolicy,
    HeadersPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest

from shared.vector.base import Vector, VectorConfigError, VectorSearchError

SCOPE = "https://cognitiveservices.azure.com/.default"
MAX_INPUTS_PER_REQUEST = 2048  # the service's cap on `input` items
# Output sizes of the known models; text-embedding-3-* also accept a smaller `dimensions`.
MODEL_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class AzureOpenAIEmbedder:
    """`Embedder` over `POST {endpoint}/openai/deployments/{deployment}/embeddings`."""

    def __init__(
        self,
        endpoint: str,
        deployment: str,
        model: str,
        dimensions: int = 0,
        api_key: str = "",
        api_version: str = "2024-10-21",
        batch_size: int = 256,
        credential: AsyncTokenCredential | None = None,
        managed_identity_client_id: str = "",
        **client_kwargs: Any,  # transport options, e.g. connection_verify
    ) -> None:
        from azure.core import AsyncPipelineClient

        if not endpoint:
            raise VectorConfigError("AZURE_OPENAI_ENDPOINT is not set")
        native = MODEL_DIMENSIONS.get(model)
        if not dimensions and not native:
            raise VectorConfigError(f"EMBEDDING_DIMENSIONS must be set for model {model!r}")
        self.dimensions = dimensions or native or 0
        # Only text-embedding-3 models take `dimensions`; asking the native size is sent as nothing.
        self._send_dimensions = bool(dimensions) and model.startswith("text-embedding-3") and dimensions != native
        if dimensions and native and dimensions != native and not self._send_dimensions:
            raise VectorConfigError(f"model {model!r} cannot shorten its vectors to {dimensions}")
        self.model_id = f"azure-openai:{model}:{self.dimensions}"
        self._url = (f"{endpoint.rstrip('/')}/openai/deployments/{deployment}/embeddings"
                     f"?api-version={api_version}")
        self._batch_size = max(1, min(batch_size, MAX_INPUTS_PER_REQUEST))
        self._owned_credential: Any = None
        if api_key:
            auth: Any = AzureKeyCredentialPolicy(AzureKeyCredential(api_key), "api-key")
        else:
            if credential is None:
                from azure.identity.aio import ManagedIdentityCredential

                credential = ManagedIdentityCredential(client_id=managed_identity_client_id or None)
                self._owned_credential = credential
            auth = AsyncBearerTokenCredentialPolicy(credential, SCOPE)
        policies = [
            HeadersPolicy({"Content-Type": "application/json"}),
            UserAgentPolicy("grc-event-streaming"),
            AsyncRetryPolicy(retry_total=4, retry_backoff_factor=0.5),
            auth,
        ]
        self._client = AsyncPipelineClient(base_url=endpoint, policies=policies, **client_kwargs)

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        out: list[Vector] = []
        for start in range(0, len(texts), self._batch_size):
            out.extend(await self._embed_batch(list(texts[start : start + self._batch_size])))
        return out

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        body: dict[str, Any] = {"input": texts, "encoding_format": "float"}
        if self._send_dimensions:
            body["dimensions"] = self.dimensions
        request = HttpRequest("POST", self._url, json=body)
        try:
            response = await self._client.send_request(request)
            await response.read()
        except AzureError as exc:
            raise VectorSearchError(f"Azure OpenAI embeddings request failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise VectorSearchError(f"Azure OpenAI embeddings answered {response.status_code}")
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        if len(data) != len(texts):
            raise VectorSearchError(f"Azure OpenAI returned {len(data)} vectors for {len(texts)} texts")
        vectors = [_normalised(item["embedding"]) for item in data]
        for v in vectors:
            if len(v) != self.dimensions:
                raise VectorSearchError(f"Azure OpenAI returned {len(v)} dimensions, expected {self.dimensions}")
        return vectors

    async def close(self) -> None:
        await self._client.close()
        if self._owned_credential is not None:
            await self._owned_credential.close()


def _normalised(vector: Sequence[float]) -> Vector:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]
