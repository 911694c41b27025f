"""Acceleration profiles, the parts that need no compiler: choosing a profile for a
device, fused projections that replace (not add to) the unfused ones, and weights
counted at their real size once quantised. The compiled profiles run in
test_compiled_engine.py."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from openfal.backends.local import acceleration as accel
from openfal.backends.local.cache import _module_bytes
from openfal.errors import ConfigError
from tests.local.helpers import run_tiny, tiny_flux_pipe

CPU = torch.device("cpu")


def test_auto_is_off_on_cpu() -> None:
    assert accel.resolve("auto", CPU).profile == "off"


def test_fp8_on_cpu_falls_back_to_compile_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "openfal.local"):
        chosen = accel.resolve("fp8", CPU)
    assert chosen.profile == "compile"
    assert "compute capability 8.9" in chosen.reason
    assert "falls back to compile" in caplog.text


def test_an_unknown_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENFAL_ACCELERATION"):
        accel.resolve("turbo", CPU)


def test_a_given_quantisation_selects_fp8_whatever_the_device() -> None:
    chosen = accel.resolve("fp8", CPU, quantization=lambda: None)
    assert chosen.profile == "fp8" and chosen.compiles


def test_the_fp8_config_is_float8_dynamic_with_per_row_scales() -> None:
    pytest.importorskip("torchao")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    config = accel.fp8_config()
    assert isinstance(config, Float8DynamicActivationFloat8WeightConfig)
    assert all(isinstance(g, PerRow) for g in (config.granularity if isinstance(config.granularity, (list, tuple)) else [config.granularity]))


def test_fused_projections_drop_the_originals_and_match_the_unfused_pipeline(models_dir: Path) -> None:
    pipe = tiny_flux_pipe(models_dir)
    before_bytes = _module_bytes(pipe.transformer)
    reference = run_tiny(pipe, 7)
    pipe.transformer.fuse_qkv_projections()
    dropped = accel.drop_unfused(pipe.transformer)
    assert dropped > 0
    names = {name.rsplit(".", 1)[-1] for name, _ in pipe.transformer.named_modules()}
    assert names.isdisjoint(accel.UNFUSED) and "to_qkv" in names
    assert _module_bytes(pipe.transformer) == before_bytes  # the same weights, regrouped
    assert np.abs(run_tiny(pipe, 7) - reference).max() < 1e-5


def test_quantised_weights_are_counted_at_their_real_size() -> None:
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    layer = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False))
    fp32 = _module_bytes(layer)
    quantize_(layer, Int8WeightOnlyConfig())
    packed = _module_bytes(layer)
    assert type(layer[0].weight).__name__ != "Parameter"  # really a torchao tensor
    assert packed < fp32 / 3  # int8 data plus per-row scales, not numel * 4 bytes
