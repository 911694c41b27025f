"""Video endpoints: fal's File-shaped ``video`` result, and LTX-Video text-to-video."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from openfal.endpoints.schemas import File, InputModel, Seed

LTX_NEGATIVE_PROMPT = (
    "low quality, worst quality, deformed, distorted, disfigured, motion smear, "
    "motion artifacts, fused fingers, bad anatomy, weird hand, ugly"
)


class LtxVideoInput(InputModel):
    prompt: Annotated[str, Field(min_length=1)]
    negative_prompt: str = LTX_NEGATIVE_PROMPT
    num_inference_steps: Annotated[int, Field(ge=1, le=50)] = 30
    guidance_scale: Annotated[float, Field(ge=1, le=10)] = 3.0
    seed: Seed | None = None


class VideoOutput(BaseModel):
    video: File
    seed: int
