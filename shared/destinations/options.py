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


_Union = Annotated[Union[RedisDestinationConfig], Field(discriminator="type")]


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
