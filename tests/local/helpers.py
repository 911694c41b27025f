"""Helpers for the local backend tests: jobs built through the endpoint schemas, event
recorders and image helpers."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from openfal.backends.base import Job, Output
from openfal.backends.local import LocalBackend, LocalOptions
from openfal.endpoints.catalog import CATALOG, validate_input
from openfal.errors import RunError
from openfal.events import Event

#: small sizes and step counts so every endpoint runs in well under a second on CPU
TEST_OPTIONS = LocalOptions(
    kontext_steps=2,
    kontext_area=128 * 128,
    image_to_image_max_area=128 * 128,
    ltx_width=64,
    ltx_height=64,
    ltx_frames=9,
    ltx_fps=24,
    video_max_area=64 * 64,
    preview_interval_seconds=0.0,
)


class Recorder:
    """A job's emitted events, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.on_event: Callable[[Event], None] | None = None

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def tiny_flux_pipe(models_dir: Path) -> Any:
    """The tiny FLUX.1 [dev] pipeline as diffusers loads it, on its own (no engine)."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(models_dir / "tiny" / "flux-dev", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_tiny(pipe: Any, seed: int) -> np.ndarray:
    """One 64x64, 2-step call of a tiny pipeline, as numpy pixels."""
    out = pipe(
        "a red fox", width=64, height=64, num_inference_steps=2, max_sequence_length=32,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    )  # fmt: skip
    return np.asarray(out.images)


def make_job(endpoint_id: str, body: dict[str, Any], request_id: str = "req") -> tuple[Job, Recorder]:
    """A job whose input went through the endpoint's schema (defaults filled), as the
    queue hands it to a backend."""
    recorder = Recorder()
    data = validate_input(CATALOG[endpoint_id], body)
    return Job(request_id=request_id, endpoint_id=endpoint_id, input=data, emit=recorder), recorder


async def run_one(backend: LocalBackend, endpoint_id: str, body: dict[str, Any]) -> tuple[Output | RunError, Recorder]:
    job, recorder = make_job(endpoint_id, body)
    (result,) = await backend.run([job])
    return result, recorder


def output_of(result: Output | RunError) -> Output:
    assert isinstance(result, Output), f"expected an Output, got {result!r}"
    return result


def pixels(blob: Any) -> Image.Image:
    return Image.open(io.BytesIO(blob.read())).convert("RGB")


def data_uri(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"
