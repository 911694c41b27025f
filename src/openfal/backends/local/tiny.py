"""The tiny random-weight model set: every model the local backend serves, shrunk to a
few hundred kilobytes, built in code with no download (tokenizers included).

Why it exists: tests and ``openfal serve --demo`` need the real diffusers pipelines end
to end without FLUX's 30 GB of weights and without network access. Each model is
saved as a diffusers-layout folder and loaded back through the same
``from_pretrained(dir, local_files_only=True)`` path as real weights, so the loading
code is exercised too. The images are noise; the shapes are real:

* the VAE has 4 levels (scale 8) and 16 latent channels, so the transformer sees
  ``in_channels=64`` and ``(H/16)*(W/16)`` image tokens exactly as FLUX.1 does, and
  the latent->RGB preview projection applies unchanged;
* FLUX.1 [dev] and Kontext have ``guidance_embeds=True``, [schnell] has not;
* dev, schnell, Kontext and the Redux prior are saved with the *same* text encoders
  and VAE weights, as the real repositories ship the same files, so component sharing
  between them is exercised.

Every module is put in ``.eval()`` before saving: modules built directly start in train
mode, and T5's dropout then makes identical calls differ.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxPriorReduxPipeline,
    FluxTransformer2DModel,
    LTXPipeline,
    LTXVideoTransformer3DModel,
)
from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

#: the names the model registry knows, in build order
TINY_MODELS = ("flux-dev", "flux-schnell", "flux-kontext-dev", "flux-redux-dev", "ltx-video", "safety-checker")

#: the text-embedding widths of the tiny set (T5 d_model, CLIP hidden size)
T5_DIM = 32
CLIP_DIM = 32


def tiny_dir(models_dir: Path) -> Path:
    """Where the tiny set lives under a models folder."""
    return models_dir / "tiny"


def is_built(folder: Path) -> bool:
    """A model folder is complete once its index (pipelines) or config (checker) exists;
    both are written last, by an atomic rename of the whole folder."""
    return (folder / "model_index.json").is_file() or (folder / "config.json").is_file()


def build_tiny_models(models_dir: Path, names: tuple[str, ...] = TINY_MODELS) -> dict[str, Path]:
    """Build (once) the tiny folders for ``names`` under ``{models_dir}/tiny``.

    Idempotent and safe against concurrent builders (a server and a worker process
    starting together): each folder is written to a temporary sibling and renamed into
    place; whoever renames second discards its copy.
    """
    root = tiny_dir(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    folders: dict[str, Path] = {}
    for name in names:
        target = root / name
        if not is_built(target):
            _build_atomically(_BUILDERS[name], target)
        folders[name] = target
    return folders


def _build_atomically(builder: Callable[[Path], None], target: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            builder(scratch)
        try:
            os.rename(scratch, target)
        except OSError:  # another process finished first (or a stale empty folder)
            if not is_built(target):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- tokenizers, made in code -----------------------------------------------------------


def clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every byte is a token.

    ``model_max_length=77`` matters: FLUX pads CLIP input to the tokenizer's maximum.
    """
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in bytes_to_unicode().values():
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> T5TokenizerFast:
    """A character-level Unigram T5 tokenizer (pad=0, eos=1, unk=2)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.printable if not c.isspace()]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_letters + string.digits]
    return T5TokenizerFast(vocab=pieces, extra_ids=0)


# -- shared components ------------------------------------------------------------------


def text_components() -> dict[str, Any]:
    """CLIP-L and T5-XXL stand-ins; built under a fixed seed so every pipeline that
    includes them saves byte-identical weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        clip = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=CLIP_DIM,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                vocab_size=514,
                max_position_embeddings=77,
                projection_dim=CLIP_DIM,
                hidden_act="gelu",
            )
        ).eval()
        t5 = T5EncoderModel(t5_config()).eval()
    return {"text_encoder": clip, "tokenizer": clip_tokenizer(), "text_encoder_2": t5, "tokenizer_2": t5_tokenizer()}


def t5_config() -> T5Config:
    return T5Config(
        vocab_size=256,
        d_model=T5_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def flux_vae() -> AutoencoderKL:
    """FLUX's VAE shape (4 levels: scale 8; 16 latent channels; FLUX's shift and scale),
    8 channels wide."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=4,
            sample_size=32,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.1159,
            scaling_factor=0.3611,
        ).eval()


def flux_transformer(*, guidance_embeds: bool) -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_DIM,
        pooled_projection_dim=CLIP_DIM,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance_embeds,
    ).eval()


def dev_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1 [dev] / Kontext [dev]'s scheduler config (resolution-dependent shift)."""
    return FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


# -- the models -------------------------------------------------------------------------


def _build_flux_dev(folder: Path) -> None:
    pipe = FluxPipeline(
        scheduler=dev_scheduler(),
        vae=flux_vae(),
        transformer=flux_transformer(guidance_embeds=True),
        **text_components(),
    )
    pipe.save_pretrained(folder)


def _build_flux_schnell(folder: Path) -> None:
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=flux_vae(),
        transformer=flux_transformer(guidance_embeds=False),
        **text_components(),
    )
    pipe.save_pretrained(folder)


def _build_flux_kontext(folder: Path) -> None:
    pipe = FluxKontextPipeline(
        scheduler=dev_scheduler(),
        vae=flux_vae(),
        transformer=flux_transformer(guidance_embeds=True),
        **text_components(),
    )
    pipe.save_pretrained(folder)


def _build_flux_redux(folder: Path) -> None:
    """The Redux prior: SigLIP vision tower + Redux projector into T5 space.

    The tiny prior also carries the tiny text encoders. The real FLUX.1-Redux-dev has
    none, and the prior then fills zero text embeddings of the hard-coded real widths
    (512x4096, 768) that the tiny transformer cannot take; with encoders present it
    uses the zero embeddings the backend passes, sized from the base transformer, so
    the backend makes the same call for tiny and real weights.
    """
    siglip = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=16, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
        )
    ).eval()
    pipe = FluxPriorReduxPipeline(
        image_encoder=siglip,
        feature_extractor=SiglipImageProcessor(size={"height": 32, "width": 32}),
        image_embedder=ReduxImageEncoder(redux_dim=16, txt_in_features=T5_DIM).eval(),
        **text_components(),
    )
    pipe.save_pretrained(folder)


def _build_ltx(folder: Path) -> None:
    """LTX-Video with the real VAE's compression (patch 4 then three 2x levels: 32x32
    spatially, 8x in time), so sizes are multiples of 32, frame counts 8k+1 and token
    counts those of the real model; transformer and widths at diffusers' test sizes."""
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=T5_DIM,
    ).eval()
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    text = text_components()
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text["text_encoder_2"],
        tokenizer=text["tokenizer_2"],
        transformer=transformer,
    )
    pipe.save_pretrained(folder)


def _build_safety_checker(folder: Path) -> None:
    """diffusers' StableDiffusionSafetyChecker at CLIP-tiny size, in the CompVis layout
    (config.json + weights + preprocessor_config.json in one folder).

    Its concept embeddings start as all-ones, so random weights flag nothing: the
    tiny checker exercises the checking path without blacking out demo images.
    """
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    StableDiffusionSafetyChecker(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "flux-dev": _build_flux_dev,
    "flux-schnell": _build_flux_schnell,
    "flux-kontext-dev": _build_flux_kontext,
    "flux-redux-dev": _build_flux_redux,
    "ltx-video": _build_ltx,
    "safety-checker": _build_safety_checker,
}
