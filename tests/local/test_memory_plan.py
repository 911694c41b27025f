"""Memory plans, sized from the real FLUX/T5/CLIP/VAE configs built on the meta device,
and the placements they choose, applied to the tiny pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from openfal.backends.local import acceleration as accel
from openfal.backends.local import memory_plan, placement
from openfal.backends.local.memory_plan import GIB, ModelPlan, component_sizes, plan_all, plan_model
from openfal.cli import main
from tests.local.helpers import run_tiny, tiny_flux_pipe


def test_sizes_come_from_the_real_flux_dev_configs() -> None:
    sizes = component_sizes("flux-dev")
    assert round(sizes["transformer"].bf16 / 2 / 1e9, 2) == 11.90  # 11.9 B parameters
    assert round(sizes["text_encoder_2"].bf16 / 2 / 1e9, 2) == 4.76  # T5-XXL encoder
    assert round(sizes["text_encoder"].bf16 / 2 / 1e6) == 123  # CLIP-L text tower
    assert round(sizes["vae"].bf16 / 2 / 1e6) == 84
    assert round(sum(s.bf16 for s in sizes.values()) / GIB, 1) == 31.4  # the pipeline in bf16


def test_a_float8_transformer_holds_about_half_the_bytes() -> None:
    t = component_sizes("flux-dev")["transformer"]
    assert t.fp8 is not None and 0.49 < t.fp8 / t.bf16 < 0.52


@pytest.mark.parametrize("gib", [24, 48, 80, 141])
def test_flux_dev_fits_every_common_card(gib: int) -> None:
    plan = plan_model("flux-dev", gib * GIB)
    assert plan.fits and plan.resident_gib <= gib


def test_on_24_gib_the_transformer_is_float8_and_on_48_and_up_everything_is_resident_bf16() -> None:
    assert plan_model("flux-dev", 24 * GIB).transformer_dtype == "float8_e4m3fn"
    for gib in (48, 80, 141):
        plan = plan_model("flux-dev", gib * GIB)
        assert (plan.offload, plan.transformer_dtype) == ("none", "bfloat16")


def test_on_24_gib_a_float8_t5_stays_resident_instead_of_visiting_per_prompt() -> None:
    plan = plan_model("flux-dev", int(22.5 * GIB), prefer_fp8=True)
    assert (plan.offload, plan.transformer_dtype, plan.text_encoder_dtype) == ("none", "float8_e4m3fn", "float8_e4m3fn")
    assert plan.resident_gib <= 22.5


def test_without_float8_the_text_encoders_leave_the_gpu_when_only_that_fits() -> None:
    plan = plan_model("flux-dev", 33 * GIB, fp8_supported=False)
    assert (plan.offload, plan.transformer_dtype) == ("text_encoders", "bfloat16")
    assert plan.resident_gib <= 33


def test_lora_slots_are_counted_on_the_targeted_layers_with_fused_qkv() -> None:
    """One rank-64 slot: ~0.8 GiB on FLUX.1 [dev] counted after fusion (a fused q/k/v
    layer holds 3r over 3x the outputs), not the 0.65 GiB an unfused count gives."""
    base = plan_model("flux-dev", 141 * GIB).components_gib["transformer"]
    slotted = plan_model("flux-dev", 141 * GIB, lora_slots=1, lora_rank=64).components_gib["transformer"]
    assert 0.7 < slotted - base < 0.9


def test_a_24_gib_card_without_float8_still_serves_through_offload() -> None:
    plan = plan_model("flux-dev", 24 * GIB, fp8_supported=False)
    assert plan.fits and plan.transformer_dtype == "bfloat16" and plan.offload in ("model", "group")


def test_the_largest_batch_is_counted() -> None:
    one = plan_model("flux-dev", 141 * GIB, max_images=1)
    four = plan_model("flux-dev", 141 * GIB, max_images=4)
    assert four.activations_gib > one.activations_gib and four.resident_gib > one.resident_gib


def test_the_safety_checker_is_counted_in_flux_plans() -> None:
    assert "safety_checker" in plan_model("flux-dev", 80 * GIB).components_gib
    assert "safety_checker" not in plan_model("flux-dev", 80 * GIB, safety_checker=False).components_gib


def test_models_plan_prints_the_json_plan_for_a_card() -> None:
    result = CliRunner().invoke(main, ["models", "plan", "--gpu-memory", "24", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["gpu_memory_gib"] == 24
    by_model = {m["model"]: m for m in data["models"]}
    dev = by_model["flux-dev"]
    assert {"model", "fits", "resident_gib", "transformer_dtype", "offload"} <= set(dev)
    assert dev["fits"] and dev["resident_gib"] <= 24
    assert set(by_model) == set(memory_plan.PLANNED)


def test_models_plan_as_a_table() -> None:
    result = CliRunner().invoke(main, ["models", "plan", "--gpu-memory", "80"])
    assert result.exit_code == 0, result.output
    assert "flux-dev" in result.stdout and "bfloat16" in result.stdout


def test_plan_all_without_float8_never_plans_float8() -> None:
    data = plan_all(24, fp8_supported=False)
    assert all(m["transformer_dtype"] != "float8_e4m3fn" for m in data["models"])


# -- placements on the tiny pipeline ---------------------------------------------------------


def _plan(offload: str, decode_batch: int = 4) -> ModelPlan:
    return ModelPlan("flux-dev", True, 20.0, "bfloat16", offload, decode_batch, 20.0, 1.0)


@pytest.mark.parametrize("offload", ["text_encoders", "group"])
def test_an_offloading_placement_gives_the_resident_images(models_dir: Path, offload: str) -> None:
    """On CPU the "GPU" is the CPU, so the test shows the hooks run and change nothing,
    not that memory moves (that needs a GPU)."""
    reference = run_tiny(tiny_flux_pipe(models_dir), 5)
    pipe = tiny_flux_pipe(models_dir)
    steps = placement.place(pipe, torch.device("cpu"), _plan(offload, decode_batch=1), accel.resolve("off", torch.device("cpu")))
    assert steps and offload.split("_")[0] in " ".join(steps)
    assert np.abs(run_tiny(pipe, 5) - reference).max() < 1e-5


def test_text_encoders_visit_the_device_only_to_encode(models_dir: Path) -> None:
    pipe = tiny_flux_pipe(models_dir)
    placement.place(pipe, torch.device("cpu"), _plan("text_encoders"), accel.resolve("off", torch.device("cpu")))
    visits: list[str] = []
    pipe.text_encoder_2.register_forward_pre_hook(lambda *a: visits.append("t5"))
    pipe.transformer.register_forward_pre_hook(lambda *a: visits.append("transformer"))
    run_tiny(pipe, 5)
    assert visits[0] == "t5" and "t5" not in visits[visits.index("transformer") :]
    assert getattr(pipe.text_encoder_2, "_openfal_visits", False)
