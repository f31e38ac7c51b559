"""Per-destination options inside a stream config (pure models, no I/O).

One class per destination type, joined in `DestinationConfig` by the `type` tag, so a PUT of a
stream config gets the field path of every bad option.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

WireFormat = Literal["native", "cloudevents"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedisStreamOptions(_Options):
    format: WireFormat = "native"
    # Length cap per tenant stream (approximate trim); retention by retentionDays applies too.
    maxLen: int | None = Field(None, ge=100, le=100_000_000)


class RedisDestinationConfig(_Options):
    type: Literal["redis"]
    enabled: bool = True
    config: RedisStreamOptions = Field(default_factory=RedisStreamOptions)


class VectorOptions(_Options):
    """No options yet: what is indexed (the text template) and where (VECTOR_* settings) are
    service-wide, so one index and one embedder serve every tenant."""


class VectorDestinationConfig(_Options):
    """Semantic search (docs/vector-search.md): events are queued, then embedded and indexed."""

    type: Literal["vector"]
    enabled: bool = True
    config: VectorOptions = Field(default_factory=VectorOptions)


_Union = Annotated[Union[RedisDestinationConfig, VectorDestinationConfig], Field(discriminator="type")]


class DestinationConfig(RootModel[_Union]):
    """`{type, enabled, config}`; `config` is checked against the type's options."""

    @property
    def type(self) -> str:
        return self.root.type

    @property
    def enabled(self) -> bool:
        return self.root.enabled

    @property
    def options(self) -> BaseModel:
        return self.root.config
