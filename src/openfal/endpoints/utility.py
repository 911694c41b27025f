"""openfal's own utility endpoints: a no-op for measuring queue overhead, and a
stepwise sleeper that exercises progress, logs, cancel and errors without a model."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from openfal.endpoints.schemas import InputModel


class EchoInput(BaseModel):
    """Anything: returned unchanged as ``{"echo": input}``."""

    model_config = ConfigDict(extra="allow")


class EchoOutput(BaseModel):
    echo: dict[str, Any]


class SleepInput(InputModel):
    seconds: Annotated[float, Field(ge=0, le=600)] = 1.0
    steps: Annotated[int, Field(ge=1, le=1000)] = 10
    fail_with: str | None = Field(
        None, description="fail at the end with this message (for testing error paths)"
    )


class SleepOutput(BaseModel):
    slept: float
    steps: int
