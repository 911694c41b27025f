"""Wan 2.2 (Alibaba, Apache-2.0): text- and image-to-video with diffusers' ``WanPipeline``
and ``WanImageToVideoPipeline``.

* ``wan2.2-ti2v-5b`` (Wan-AI/Wan2.2-TI2V-5B-Diffusers): one 5B transformer over the
  Wan 2.2 VAE (16x16 spatial, 4x temporal compression, 48 latent channels), text- and
  image-to-video from one set of weights (``expand_timesteps``: the first frame's latent
  is the image's); 1280x704 at 24 fps. Serves ``fal-ai/wan/v2.2-5b/text-to-video`` and
  ``/image-to-video``.
* ``wan2.2-t2v-a14b`` (Wan-AI/Wan2.2-T2V-A14B-Diffusers): two 14B experts over the
  Wan 2.1 VAE; ``transformer`` denoises the high-noise steps, ``transformer_2`` the rest,
  switched where the timestep crosses ``boundary_ratio`` (0.875) x 1000, inside diffusers'
  loop; each has its own guidance scale (fal's ``guidance_scale`` and ``guidance_scale_2``).
  Serves ``fal-ai/wan/v2.2-a14b/text-to-video``.

fal's ``resolution`` x ``aspect_ratio`` pick the frame size (``SIZES``; 720p is 1280x704
on the 5B, whose sizes are multiples of 32, and 1280x720 on the A14B); ``shift`` is the
scheduler's flow shift; ``num_frames`` is made as diffusers makes it (4k+1 frames).
``video_quality`` and ``video_write_mode`` choose the H.264 CRF and x264 preset. Frame
interpolation, prompt expansion, the safety checkers and per-request ``acceleration``
are accepted and named in the request's logs as not applied.

The pipeline returns latents; the VAE decode runs here with a report per decoded chunk
(one latent frame: 4 video frames, the first 1), cancellable between chunks, and the
frames leave the device as uint8, never as float video.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openfal.backends.local.families.contract import Component, Endpoint, Model, prompt_expansion_notes
from openfal.backends.local.families.videos import Encoding, VideoFamily, VideoItem, VideoShape
from openfal.endpoints import wan as schemas
from openfal.endpoints.licences import APACHE_2

if TYPE_CHECKING:
    from openfal.backends.base import Job
    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.options import LocalOptions
    from openfal.backends.local.progress import VideoReporter

TI2V_5B = "wan2.2-ti2v-5b"
T2V_A14B = "wan2.2-t2v-a14b"
T2V_5B_ENDPOINT = "fal-ai/wan/v2.2-5b/text-to-video"
I2V_5B_ENDPOINT = "fal-ai/wan/v2.2-5b/image-to-video"
T2V_A14B_ENDPOINT = "fal-ai/wan/v2.2-a14b/text-to-video"
TEXT_TO_VIDEO = "text-to-video"
IMAGE_TO_VIDEO = "image-to-video"
T2V_PIPELINE = "WanPipeline"
I2V_PIPELINE = "WanImageToVideoPipeline"
#: the A14B's expert switch: timesteps >= 0.875 x 1000 run ``transformer`` (diffusers' conversion)
A14B_BOUNDARY_RATIO = 0.875
#: fal prices Wan 2.2 A14B per video second, "calculated at 16 frames per second"
BILLED_FPS = 16

# -- real component configs (memory plans; nothing downloaded) ---------------------------------
# diffusers' scripts/convert_wan_to_diffusers.py ("Wan2.2-TI2V-5B", "Wan2.2-T2V-A14B",
# vae22_diffusers_config), as saved in the -Diffusers repositories' config.json files.

_WAN_TRANSFORMER = {
    "patch_size": [1, 2, 2], "attention_head_dim": 128, "cross_attn_norm": True, "eps": 1e-06, "freq_dim": 256,
    "qk_norm": "rms_norm_across_heads", "text_dim": 4096, "added_kv_proj_dim": None,
}  # fmt: skip
TRANSFORMER_5B: dict[str, Any] = {**_WAN_TRANSFORMER, "num_attention_heads": 24, "num_layers": 30, "ffn_dim": 14336, "in_channels": 48, "out_channels": 48}
TRANSFORMER_14B: dict[str, Any] = {**_WAN_TRANSFORMER, "num_attention_heads": 40, "num_layers": 40, "ffn_dim": 13824, "in_channels": 16, "out_channels": 16}
#: the Wan 2.2 VAE (latents_mean/std, 48 numbers each, are not parameters and are left out)
VAE_22: dict[str, Any] = {
    "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
    "temperal_downsample": [False, True, True], "is_residual": True, "in_channels": 12, "out_channels": 12, "patch_size": 2,
    "scale_factor_temporal": 4, "scale_factor_spatial": 16,
}  # fmt: skip
#: the Wan 2.1 VAE (the A14B's): AutoencoderKLWan's defaults
VAE_21: dict[str, Any] = {}
#: google/umt5-xxl's encoder (config.json), which every Wan 2.x ships as ``text_encoder``
UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1,
}  # fmt: skip

# -- frame sizes ---------------------------------------------------------------------------------

#: (width, height) per resolution and aspect ratio. 720p is Wan's own 1280x720 (A14B) and
#: 1280x704 (TI2V-5B, trained at that size); 480p is Wan's 832x480; 580p is 1024x576.
#: 1:1 keeps about the 16:9 area. Sides are multiples of the model's ``MULTIPLE``.
SIZES: dict[str, dict[str, dict[str, tuple[int, int]]]] = {
    TI2V_5B: {
        "720p": {"16:9": (1280, 704), "9:16": (704, 1280), "1:1": (960, 960)},
        "580p": {"16:9": (1024, 576), "9:16": (576, 1024), "1:1": (768, 768)},
    },
    T2V_A14B: {
        "720p": {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960)},
        "580p": {"16:9": (1024, 576), "9:16": (576, 1024), "1:1": (768, 768)},
        "480p": {"16:9": (832, 480), "9:16": (480, 832), "1:1": (624, 624)},
    },
}
#: what each side must divide by: the VAE's spatial compression x the 2x2 patch
MULTIPLE = {TI2V_5B: 32, T2V_A14B: 16}
#: the call memory plans are sized for: 720p, 81 frames (fal's default request; the
#: default OPENFAL_MAX_VIDEO_PIXELS admits no more)
PLAN_CALL = {TI2V_5B: (1280, 704, 81), T2V_A14B: (1280, 720, 81)}


def frame_count(num_frames: int) -> int:
    """The frames Wan makes for ``num_frames`` (diffusers rounds to 4k+1 this way)."""
    return num_frames if num_frames % 4 == 1 else num_frames // 4 * 4 + 1


def latent_frames(frames: int) -> int:
    return (frames - 1) // 4 + 1


def fit_area(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """``width`` x ``height``'s aspect at about ``area`` pixels, sides rounded to ``multiple``."""
    ratio = width / height
    w = max(multiple, round(math.sqrt(area * ratio) / multiple) * multiple)
    h = max(multiple, round(math.sqrt(area / ratio) / multiple) * multiple)
    return w, h


# -- memory estimates -----------------------------------------------------------------------------


def _tokens(width: int, height: int, frames: int, vae_scale: int) -> int:
    return latent_frames(frames) * (height // (vae_scale * 2)) * (width // (vae_scale * 2))


def _activation_5b(width: int, height: int, frames: int) -> int:
    """The 5B transformer at the largest call: 16 hidden-width tensors per token (as
    FLUX's estimate), plus 18 for ``expand_timesteps``' per-token modulation (a (tokens,
    6, 3072) timestep projection, added to each block's table in float32)."""
    return 34 * _tokens(width, height, frames, 16) * 3072 * 2


def _activation_14b(width: int, height: int, frames: int) -> int:
    """One 14B expert at the largest call (the experts run one at a time, cond and
    uncond one after the other): 16 hidden-width tensors per token."""
    return 16 * _tokens(width, height, frames, 8) * 5120 * 2


def _vae_decode(widest_channels: int, patch: int) -> Any:
    """The Wan VAE decode's peak, bf16: it decodes one latent frame (4 video frames) at a
    time through a causal cache, so its working set is 4 tensors of the widest stage at
    the decoder's last resolution (the input, its upsampled or cache-padded copy, the
    conv output and the residual), ``widest_channels`` x 4 frames each; and the whole
    video it accumulates, twice while a chunk is appended, plus the uint8 conversion."""

    def estimate(width: int, height: int, frames: int) -> int:
        working = 4 * widest_channels * 4 * (height // patch) * (width // patch) * 2
        video = 3 * 3 * frames * height * width * 2
        return working + video

    return estimate


# -- tiny builds ------------------------------------------------------------------------------------


def umt5_encoder() -> Any:
    """A tiny UMT5 encoder (the T5 tokenizer's 256 ids, ``T5_DIM`` wide), built under a
    fixed seed so both tiny Wan folders save the same weights."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    from openfal.backends.local.tiny import T5_DIM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        config = UMT5Config(
            vocab_size=256, d_model=T5_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )  # fmt: skip
        return UMT5EncoderModel(config).eval()


def _tiny_transformer(channels: int) -> Any:
    """diffusers' test-size Wan transformer; ``rope_max_seq_len`` stays the real 1024 so
    720p frames (40 patches wide) fit its rotary table."""
    from diffusers import WanTransformer3DModel

    from openfal.backends.local.tiny import T5_DIM

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=channels, out_channels=channels,
        text_dim=T5_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    ).eval()  # fmt: skip


def _scheduler(flow_shift: float) -> Any:
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=flow_shift)


def _build_tiny_5b(folder: Path) -> None:
    """TI2V-5B with the Wan 2.2 VAE's real compression (patch 2, three 2x levels: 16x16
    spatially, 4x in time, 48 latent channels, residual decoder), so sizes, frame counts
    and token counts are the real model's; widths at diffusers' test sizes."""
    from diffusers import AutoencoderKLWan, WanPipeline

    from openfal.backends.local.tiny import t5_tokenizer

    vae = AutoencoderKLWan(
        base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2, latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1, scale_factor_spatial=16, scale_factor_temporal=4,
        temperal_downsample=[False, True, True],
    ).eval()  # fmt: skip
    pipe = WanPipeline(
        tokenizer=t5_tokenizer(), text_encoder=umt5_encoder(), vae=vae, scheduler=_scheduler(5.0), transformer=_tiny_transformer(48),
        expand_timesteps=True,
    )  # fmt: skip
    pipe.save_pretrained(folder)


def _build_tiny_a14b(folder: Path) -> None:
    """T2V-A14B: two experts (high- and low-noise) with the real boundary, over a tiny
    Wan 2.1 VAE (8x8 spatially, 4x in time, 16 latent channels)."""
    from diffusers import AutoencoderKLWan, WanPipeline

    from openfal.backends.local.tiny import t5_tokenizer

    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]).eval()
    pipe = WanPipeline(
        tokenizer=t5_tokenizer(), text_encoder=umt5_encoder(), vae=vae, scheduler=_scheduler(3.0), transformer=_tiny_transformer(16),
        transformer_2=_tiny_transformer(16), boundary_ratio=A14B_BOUNDARY_RATIO,
    )  # fmt: skip
    pipe.save_pretrained(folder)


# -- the family -------------------------------------------------------------------------------------

_TEXT_ENCODER = Component("transformers.UMT5EncoderModel", UMT5_XXL, "UMT5Config")


class Wan(VideoFamily):
    name = "wan"
    models = (
        Model(
            TI2V_5B, "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "Wan 2.2 TI2V-5B text- and image-to-video (720p, 24 fps)", APACHE_2, T2V_PIPELINE,
            {
                "transformer": Component("diffusers.WanTransformer3DModel", TRANSFORMER_5B),
                "text_encoder": _TEXT_ENCODER,
                "vae": Component("diffusers.AutoencoderKLWan", VAE_22),
            },
            _build_tiny_5b, activation_bytes=_activation_5b, vae_decode_bytes=_vae_decode(2 * 256, 2), largest_call=PLAN_CALL[TI2V_5B],
        ),
        Model(
            T2V_A14B, "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "Wan 2.2 T2V-A14B text-to-video (two 14B experts)", APACHE_2, T2V_PIPELINE,
            {
                "transformer": Component("diffusers.WanTransformer3DModel", TRANSFORMER_14B),
                "transformer_2": Component("diffusers.WanTransformer3DModel", TRANSFORMER_14B),
                "text_encoder": _TEXT_ENCODER,
                "vae": Component("diffusers.AutoencoderKLWan", VAE_21),
            },
            _build_tiny_a14b, activation_bytes=_activation_14b, vae_decode_bytes=_vae_decode(2 * 96, 1), largest_call=PLAN_CALL[T2V_A14B],
        ),
    )  # fmt: skip
    # Prices: fal's model pages for Wan 2.2 A14B (fal.ai/models/fal-ai/wan/v2.2-a14b/*/llms.txt):
    # $0.08 per video second at 720p ($0.06 at 580p, $0.04 at 480p), seconds counted at
    # 16 fps. The price list has one price per endpoint: the 720p one. No list price for
    # the 5B endpoints was found in the sources at hand: set one with OPENFAL_PRICES.
    endpoints = (
        Endpoint(T2V_5B_ENDPOINT, "Wan 2.2 5B text to video", schemas.Wan5bTextToVideoInput, schemas.WanOutput, TEXT_TO_VIDEO, (TI2V_5B,), media="video"),
        Endpoint(I2V_5B_ENDPOINT, "Wan 2.2 5B image to video", schemas.Wan5bImageToVideoInput, schemas.WanOutput, IMAGE_TO_VIDEO, (TI2V_5B,), media="video"),
        Endpoint(T2V_A14B_ENDPOINT, "Wan 2.2 A14B text to video", schemas.WanA14bTextToVideoInput, schemas.WanOutput, TEXT_TO_VIDEO, (T2V_A14B,),
                 {"per_video_second": 0.08}, media="video"),
    )  # fmt: skip
    compile_blocks = ("blocks",)
    lora_targets = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")
    report_prompt = True

    # -- shape ------------------------------------------------------------------------------------

    def shape(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions, image_size: tuple[int, int] | None = None) -> VideoShape:
        model = self.endpoint(endpoint_id).model
        sizes = SIZES[model][str(input.get("resolution") or "720p")]
        aspect = str(input.get("aspect_ratio") or "16:9")
        if aspect == "auto":  # the input image's aspect at the resolution's area (at submit: 16:9's)
            w, h = sizes["16:9"]
            width, height = fit_area(*(image_size or (w, h)), w * h, MULTIPLE[model])
        else:
            width, height = sizes[aspect]
        if options.video_max_area is not None and width * height > options.video_max_area:
            width, height = _shrink(width, height, options.video_max_area, MULTIPLE[model])
        return VideoShape(width, height, frame_count(int(input.get("num_frames") or 81)), int(input.get("frames_per_second") or 16))

    def decode_chunks(self, shape: VideoShape) -> int:
        return latent_frames(shape.frames)

    def billed_seconds(self, shape: VideoShape) -> float:
        return shape.frames / BILLED_FPS

    async def prepare(self, backend: Any, job: Job) -> tuple[VideoItem, VideoShape]:
        if job.endpoint_id != I2V_5B_ENDPOINT:
            return await super().prepare(backend, job)
        from openfal.fetch import fetch_image

        image = await fetch_image(job.input["image_url"], backend.settings, field="image_url", client=backend.http())
        shape = self.shape(job.endpoint_id, job.input, backend.options, image.size)
        first = await asyncio.to_thread(_cover, image, shape.width, shape.height)
        return VideoItem.of(job, image=first), shape

    def notes(self, endpoint_id: str, input: dict[str, Any]) -> list[str]:
        notes = []
        asked = int(input.get("num_frames") or 81)
        if frame_count(asked) != asked:
            notes.append(f"num_frames {asked} is made as {frame_count(asked)} (Wan makes 4k+1 frames)")
        interpolated = int(input.get("num_interpolated_frames") or 0)
        if input.get("interpolator_model", "none") != "none" and interpolated > 0:
            notes.append(
                f"frame interpolation ({input['interpolator_model']}, {interpolated} between each pair) is not installed on this "
                "server: not applied; the video has the generated frames at frames_per_second (nothing for "
                "adjust_fps_for_interpolation to adjust)"
            )
        notes += prompt_expansion_notes(input)
        for name in ("enable_safety_checker", "enable_output_safety_checker"):
            if input.get(name):
                notes.append(f"{name}: this server has no video safety checker; not applied")
        if input.get("acceleration", "none") != "none":
            notes.append(f"acceleration {input['acceleration']!r}: acceleration is the server's setting (OPENFAL_ACCELERATION), not applied per request")
        return notes

    def encoding(self, input: dict[str, Any]) -> Encoding:
        crf = {"low": 28, "medium": 23, "high": 18, "maximum": 12}[str(input.get("video_quality") or "high")]
        preset = {"fast": "veryfast", "balanced": "medium", "small": "slow"}[str(input.get("video_write_mode") or "balanced")]
        return Encoding(crf, preset)

    # -- running ----------------------------------------------------------------------------------

    def pipeline_spec(self, endpoint_id: str, folder: Any) -> PipelineSpec:
        from openfal.backends.local.cache import PipelineSpec

        model = self.endpoint(endpoint_id).model
        return PipelineSpec(model, folder(model), I2V_PIPELINE if endpoint_id == I2V_5B_ENDPOINT else T2V_PIPELINE)

    def call_pipeline(self, pipe: Any, item: VideoItem, shape: VideoShape, reporter: VideoReporter) -> Any:
        import torch
        from diffusers import UniPCMultistepScheduler

        input = item.job.input
        # fal's ``shift`` is the flow shift; the scheduler carries it, so each call sets it
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=float(input.get("shift") or 5))
        kwargs: dict[str, Any] = {}
        if getattr(pipe, "transformer_2", None) is not None:
            kwargs["guidance_scale_2"] = float(input.get("guidance_scale_2") or item.guidance)
        if item.image is not None:
            kwargs["image"] = item.image
        latents = pipe(
            prompt=item.prompt,
            negative_prompt=item.negative_prompt,
            width=shape.width,
            height=shape.height,
            num_frames=shape.frames,
            num_inference_steps=item.steps,
            guidance_scale=item.guidance,
            generator=torch.Generator("cpu").manual_seed(item.seed),
            callback_on_step_end=reporter,
            output_type="latent",
            **kwargs,
        ).frames
        return decode(pipe.vae, latents, shape.frames, reporter)


def decode(vae: Any, latents: Any, frames: int, reporter: VideoReporter) -> Any:
    """The video's frames as uint8 (frames, height, width, 3), decoded as diffusers'
    pipeline decodes them, with a report (and a cancel check) per latent frame decoded."""
    import numpy as np
    import torch
    from diffusers.utils.torch_utils import get_module_execution_device

    latents = latents.to(get_module_execution_device(vae), dtype=vae.dtype)
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
    latents = latents * std + mean
    chunks = [0]

    def report(module: Any, args: Any, output: Any) -> None:
        chunks[0] += 1
        k = chunks[0]
        first, last = (1, 1) if k == 1 else (4 * k - 6, 4 * k - 3)
        reporter.decoded(k, first, min(last, frames), frames)

    hook = vae.decoder.register_forward_hook(report)
    try:
        with torch.inference_mode():
            video = vae.decode(latents, return_dict=False)[0][0]  # (3, frames, height, width) in [-1, 1]
            out = np.empty((video.shape[1], video.shape[2], video.shape[3], 3), dtype=np.uint8)
            for start in range(0, video.shape[1], 16):  # to uint8 on the device, 16 frames at a time
                part = (video[:, start : start + 16].float() + 1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
                out[start : start + 16] = part.permute(1, 2, 3, 0).cpu().numpy()
    finally:
        hook.remove()
    return out


def _shrink(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down to at most about ``area`` (``LocalOptions.video_max_area``)."""
    scale = math.sqrt(area / (width * height))
    return max(multiple, int(width * scale) // multiple * multiple), max(multiple, int(height * scale) // multiple * multiple)


def _cover(image: Any, width: int, height: int) -> Any:
    """The image resized to cover ``width`` x ``height`` and centre-cropped to it (fal:
    "if the input image does not match the chosen aspect ratio, it is resized and center
    cropped")."""
    from PIL import Image, ImageOps

    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)


FAMILY = Wan()
