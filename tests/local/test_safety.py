"""The safety checker behind has_nsfw_concepts: a real (tiny) checker loaded from local
weights, the flagged path, and the documented behaviour with no checker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from openfal.backends.local import LocalBackend
from openfal.backends.local.safety import ClassifierSafetyChecker, DiffusersSafetyChecker, load_safety_checker
from openfal.backends.local.tiny import tiny_dir
from openfal.errors import ModelUnavailable
from openfal.events import Log
from tests.local.helpers import TEST_OPTIONS, output_of, pixels, run_one

SCHNELL = "fal-ai/flux-1/schnell"


def body(**extra: Any) -> dict[str, Any]:
    return {"prompt": "x", "image_size": {"width": 32, "height": 32}, "num_inference_steps": 1, "seed": 3, **extra}


class FlagEverySecond:
    """A stub checker that flags images 1, 3, ... A stub, because random weights cannot
    be made to flag an image on purpose; the real checkers are tested separately."""

    active = True

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: list[Image.Image]) -> list[bool]:
        self.calls += 1
        return [i % 2 == 1 for i in range(len(images))]


def test_the_tiny_diffusers_checker_loads_from_its_folder(models_dir: Path) -> None:
    """The tiny StableDiffusionSafetyChecker folder loads through load_safety_checker and
    returns one flag per image (all False: its concept embeddings start as ones)."""
    import torch

    checker = load_safety_checker(tiny_dir(models_dir) / "safety-checker", torch.device("cpu"))
    assert isinstance(checker, DiffusersSafetyChecker)
    assert checker([Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (16, 16))]) == [False, False]


def test_an_nsfw_classifier_folder_is_recognised(tmp_path: Path) -> None:
    """A transformers image classifier with an 'nsfw' label (Falconsai's layout) loads
    as the classifier checker and thresholds P(nsfw) at 0.85."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
        num_labels=2, id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1},
    )  # fmt: skip
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():  # make the classifier certain of 'nsfw' whatever the image
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 10.0]))
    model.save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    checker = load_safety_checker(tmp_path, torch.device("cpu"))
    assert isinstance(checker, ClassifierSafetyChecker)
    assert checker([Image.new("RGB", (20, 20))]) == [True]


def test_a_folder_that_is_no_checker_is_refused(tmp_path: Path) -> None:
    """A config without an nsfw label or checker class is a clear ModelUnavailable."""
    import torch

    (tmp_path / "config.json").write_text('{"id2label": {"0": "cat", "1": "dog"}}')
    with pytest.raises(ModelUnavailable, match="nsfw"):
        load_safety_checker(tmp_path, torch.device("cpu"))


async def test_the_configured_checker_runs_on_generated_images(make_settings: Any, models_dir: Path) -> None:
    """With safety_checker_path set (outside demo mode), the real tiny checker runs and
    no 'no checker' warning is logged."""
    tiny = tiny_dir(models_dir)
    settings = make_settings(demo=False, model_paths={"flux-schnell": str(tiny / "flux-schnell")}, safety_checker_path=str(tiny / "safety-checker"))
    local = LocalBackend(settings, options=TEST_OPTIONS)
    result, recorder = await run_one(local, SCHNELL, body())
    assert isinstance(local.engine().safety_checker(), DiffusersSafetyChecker)
    await local.close()
    assert output_of(result).payload["has_nsfw_concepts"] == [False]
    assert not [log for log in recorder.of(Log) if "No safety checker" in log.message]


async def test_flagged_images_are_black_and_reported(make_settings: Any) -> None:
    """Flagged images come back black, with has_nsfw_concepts True for them only."""
    stub = FlagEverySecond()
    local = LocalBackend(make_settings(), options=TEST_OPTIONS, safety_checker=stub)
    result, recorder = await run_one(local, SCHNELL, body(num_images=2, output_format="png"))
    await local.close()
    output = output_of(result)
    assert output.payload["has_nsfw_concepts"] == [False, True]
    first, second = (np.asarray(pixels(blob)) for blob in output.payload["images"])
    assert second.max() == 0 and first.max() > 0
    assert [log for log in recorder.of(Log) if "flagged" in log.message]


async def test_disabling_the_checker_skips_it(make_settings: Any) -> None:
    """enable_safety_checker=false: all False, and the checker is not called."""
    stub = FlagEverySecond()
    local = LocalBackend(make_settings(), options=TEST_OPTIONS, safety_checker=stub)
    result, _ = await run_one(local, SCHNELL, body(num_images=2, enable_safety_checker=False))
    await local.close()
    assert output_of(result).payload["has_nsfw_concepts"] == [False, False]
    assert stub.calls == 0


async def test_without_a_checker_nothing_is_flagged_and_a_log_says_so(make_settings: Any, models_dir: Path) -> None:
    """No checker installed or configured (the default outside demo mode): every flag is
    False and the request's logs say that no check ran."""
    settings = make_settings(demo=False, model_paths={"flux-schnell": str(tiny_dir(models_dir) / "flux-schnell")})
    local = LocalBackend(settings, options=TEST_OPTIONS)
    result, recorder = await run_one(local, SCHNELL, body())
    await local.close()
    assert output_of(result).payload["has_nsfw_concepts"] == [False]
    assert [log for log in recorder.of(Log) if "No safety checker is installed" in log.message and log.level == "WARN"]


async def test_a_configured_checker_that_is_missing_fails_the_run(make_settings: Any, models_dir: Path, tmp_path: Path) -> None:
    """An operator who set safety_checker_path gets an error, not silently unchecked images."""
    settings = make_settings(
        demo=False,
        model_paths={"flux-schnell": str(tiny_dir(models_dir) / "flux-schnell")},
        safety_checker_path=str(tmp_path / "nowhere"),
    )
    local = LocalBackend(settings, options=TEST_OPTIONS)
    result, _ = await run_one(local, SCHNELL, body())
    await local.close()
    assert isinstance(result, ModelUnavailable) and "safety-checker" in result.message
