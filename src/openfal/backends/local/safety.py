"""NSFW checking of generated images (fal's ``has_nsfw_concepts``).

FLUX pipelines have no safety checker; this module adds one, run on the decoded images:

* ``StableDiffusionSafetyChecker`` folders (diffusers; CompVis/stable-diffusion-safety-checker
  layout: CLIP vision tower + concept embeddings, with its ``preprocessor_config.json``);
* transformers image classifiers with an ``nsfw`` label (Falconsai/nsfw_image_detection,
  BFL's reference filter), flagged when P(nsfw) > 0.85 as in BFL's ``content_filters.py``.

Flagged images are replaced by black images of the same size, as fal does.

Honest default: with no checker installed, nothing is flagged. ``has_nsfw_concepts`` is
then all false and each run logs that no checker ran, rather than refusing to serve.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from openfal.errors import ModelUnavailable

log = logging.getLogger("openfal.local")

NSFW_THRESHOLD = 0.85


class SafetyChecker(Protocol):
    #: False for the placeholder that checks nothing (the backend logs it per run)
    active: bool

    def __call__(self, images: list[Image.Image]) -> list[bool]:
        """One flag per image: True when it must not be delivered."""
        ...


class NoSafetyChecker:
    """No checker configured: nothing is flagged."""

    active = False

    def __call__(self, images: list[Image.Image]) -> list[bool]:
        return [False] * len(images)


class DiffusersSafetyChecker:
    """diffusers' ``StableDiffusionSafetyChecker`` (CLIP ViT-L/14 + concept embeddings)."""

    active = True

    def __init__(self, folder: Path, device: torch.device) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        self.device = device
        self.model = StableDiffusionSafetyChecker.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[bool]:
        clip_input = self.processor(images=images, return_tensors="pt").pixel_values.to(self.device, self.model.dtype)
        arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in images]  # sizes may differ
        _, flags = self.model(images=arrays, clip_input=clip_input)
        return [bool(flag) for flag in flags]


class ClassifierSafetyChecker:
    """A transformers image classifier with an ``nsfw`` label."""

    active = True

    def __init__(self, folder: Path, device: torch.device, threshold: float = NSFW_THRESHOLD) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.device = device
        self.threshold = threshold
        self.model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        labels = {str(v).lower(): int(k) for k, v in self.model.config.id2label.items()}
        self.nsfw_index = labels["nsfw"]

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[bool]:
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        probabilities = self.model(**inputs).logits.softmax(dim=-1)[:, self.nsfw_index]
        return [bool(p > self.threshold) for p in probabilities.tolist()]


def load_safety_checker(folder: Path, device: torch.device) -> SafetyChecker:
    """The checker in ``folder``, chosen by its ``config.json``."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelUnavailable(f"The safety checker folder {folder} has no config.json")
    config = json.loads(config_file.read_text())
    architectures = config.get("architectures") or []
    if config.get("_class_name") == "StableDiffusionSafetyChecker" or "StableDiffusionSafetyChecker" in architectures:
        return DiffusersSafetyChecker(folder, device)
    labels = {str(v).lower() for v in (config.get("id2label") or {}).values()}
    if "nsfw" in labels:
        return ClassifierSafetyChecker(folder, device)
    raise ModelUnavailable(
        f"The safety checker at {folder} is neither a StableDiffusionSafetyChecker nor an image "
        f"classifier with an 'nsfw' label"
    )


def blacken(images: list[Image.Image], flags: list[bool]) -> list[Image.Image]:
    """Flagged images replaced by black images of the same size."""
    return [Image.new("RGB", image.size) if flag else image for image, flag in zip(images, flags, strict=True)]
