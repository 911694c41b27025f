"""LTX-Video (Lightricks, 0.9): ``fal-ai/ltx-video`` text-to-video with ``LTXPipeline``.

fal's schema has no size or length; ``LocalOptions`` holds them (768x512, 121 frames at
24 fps by default: about 5 s, the LTX paper's setting). No previews: a video latent has
no cheap RGB projection here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from openfal.backends.local import model_configs
from openfal.backends.local.families.contract import Component, Endpoint, Model
from openfal.backends.local.families.videos import VideoFamily, VideoItem, VideoShape
from openfal.endpoints import video as schemas
from openfal.endpoints.licences import LTXV_OPEN_WEIGHTS

if TYPE_CHECKING:
    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.options import LocalOptions
    from openfal.backends.local.progress import VideoReporter

LTX_MODEL = "ltx-video"
LTX_PIPELINE = "LTXPipeline"
TEXT_TO_VIDEO = "text-to-video"
#: 768x512x121 frames: 6144 tokens x 2048 wide, plus the VAE's temporal tiles
ACTIVATION_BYTES = 2 * 1024**3


def _build_tiny(folder: Path) -> None:
    """LTX-Video with the real VAE's compression (patch 4 then three 2x levels: 32x32
    spatially, 8x in time), so sizes are multiples of 32, frame counts 8k+1 and token
    counts those of the real model; transformer and widths at diffusers' test sizes."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    from openfal.backends.local.tiny import T5_DIM, text_components

    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=1, caption_channels=T5_DIM,
    ).eval()  # fmt: skip
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=4, patch_size_t=1, encoder_causal=True,
        decoder_causal=False,
    ).eval()  # fmt: skip
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    text = text_components()
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text["text_encoder_2"], tokenizer=text["tokenizer_2"],
        transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(folder)


class Ltx(VideoFamily):
    name = "ltx"
    models = (
        Model(
            LTX_MODEL, "Lightricks/LTX-Video", "LTX-Video text-to-video", LTXV_OPEN_WEIGHTS, LTX_PIPELINE,
            {
                # the defaults of diffusers' LTXVideoTransformer3DModel and AutoencoderKLLTXVideo are LTX-Video 0.9's
                "transformer": Component("diffusers.LTXVideoTransformer3DModel", {}),
                "text_encoder": Component("transformers.T5EncoderModel", model_configs.T5_XXL_ENCODER, "T5Config"),
                "vae": Component("diffusers.AutoencoderKLLTXVideo", {}),
            },
            _build_tiny, activation_bytes=lambda width, height, images: ACTIVATION_BYTES,
        ),
    )  # fmt: skip
    endpoints = (
        Endpoint("fal-ai/ltx-video", "LTX-Video text to video", schemas.LtxVideoInput, schemas.VideoOutput, TEXT_TO_VIDEO, (LTX_MODEL,),
                 {"per_request": 0.02}, media="video"),
    )  # fmt: skip
    compile_blocks = ("transformer_blocks",)

    def shape(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions, image_size: tuple[int, int] | None = None) -> VideoShape:
        return VideoShape(options.ltx_width, options.ltx_height, options.ltx_frames, options.ltx_fps)

    def pipeline_spec(self, endpoint_id: str, folder: Any) -> PipelineSpec:
        from openfal.backends.local.cache import PipelineSpec

        return PipelineSpec(LTX_MODEL, folder(LTX_MODEL), LTX_PIPELINE)

    def call_pipeline(self, pipe: Any, item: VideoItem, shape: VideoShape, reporter: VideoReporter) -> list[Any]:
        import torch

        out = pipe(
            prompt=item.prompt,
            negative_prompt=item.negative_prompt or None,
            width=shape.width,
            height=shape.height,
            num_frames=shape.frames,
            frame_rate=shape.fps,
            num_inference_steps=item.steps,
            guidance_scale=item.guidance,
            generator=torch.Generator("cpu").manual_seed(item.seed),
            callback_on_step_end=reporter,
            output_type="pil",
        )
        return list(out.frames[0])


FAMILY = Ltx()
