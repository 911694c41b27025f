"""Z-Image Turbo (Tongyi-MAI, 2025-11): a 6B single-stream DiT distilled to 8 steps
without classifier-free guidance, prompts encoded by Qwen3-4B, images decoded by
FLUX.1's VAE. Apache-2.0.

| endpoint                             | pipeline                      | weights       |
| ------------------------------------ | ----------------------------- | ------------- |
| fal-ai/z-image/turbo, /turbo/lora    | ZImagePipeline (+ LoRAs)      | z-image-turbo |
| fal-ai/z-image/turbo/image-to-image  | ZImageImg2ImgPipeline         | z-image-turbo |

Every call runs with ``guidance_scale=0`` (Turbo's setting; fal exposes no guidance).
Image-to-image with ``image_size: auto`` keeps the input's size (floored to 16, scaled
down past ``LocalOptions.image_to_image_max_area``). ``enable_prompt_expansion`` (fal
rewrites the prompt with an LLM) has no local counterpart: it is accepted and the
request's logs say it was not applied.

Compiled engines: the transformer attends over the image tokens and the caption, and
diffusers' Z-Image builds the caption's positions so that a compiled block (static
shapes) is specialised to the caption's exact token count, not only to the output size
and the images in the call (measured on CPU: another prompt length fails
``fail_on_recompile`` on the refiner's ``freqs_cis`` strides; ``dynamic=True`` covers
lengths within one 32-token bucket only). Warm-up compiles each warm-up size with its
warm-up prompt; a request with another prompt length compiles its blocks on first use
until the engine compiles the token dimension dynamically (issue 22).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from openfal.backends.local import sizes
from openfal.backends.local.families.contract import Component, Endpoint, Model, prompt_expansion_notes
from openfal.backends.local.families.flux1 import FLUX_VAE, tiny_vae
from openfal.backends.local.families.images import Callback, ImageCall, ImageFamily, ImageItem, ImagePlan, lora_refs
from openfal.endpoints import z_image as schemas
from openfal.endpoints.licences import APACHE_2
from openfal.fetch import fetch_image

if TYPE_CHECKING:
    import httpx

    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.options import LocalOptions
    from openfal.config import Settings

TEXT = "text"
IMAGE_TO_IMAGE = "image-to-image"
MODEL = "z-image-turbo"
PIPELINE_CLASS = {TEXT: "ZImagePipeline", IMAGE_TO_IMAGE: "ZImageImg2ImgPipeline"}
#: the caption budget ZImagePipeline tokenizes to (its default)
MAX_SEQUENCE_LENGTH = 512
#: Z-Image Turbo is guidance-distilled: no negative pass
GUIDANCE = 0.0
WARMUP_PROMPT = "warm-up"

# -- the real architecture (public config.json files of Tongyi-MAI/Z-Image-Turbo) ------------

Z_IMAGE_TRANSFORMER: dict[str, Any] = {
    "all_patch_size": (2,), "all_f_patch_size": (1,), "in_channels": 16, "dim": 3840, "n_layers": 30, "n_refiner_layers": 2,
    "n_heads": 30, "n_kv_heads": 30, "norm_eps": 1e-5, "qk_norm": True, "cap_feat_dim": 2560, "rope_theta": 256.0,
    "t_scale": 1000.0, "axes_dims": (32, 48, 48), "axes_lens": (1536, 512, 512),
}  # fmt: skip
#: Qwen3-4B, the text encoder (``Qwen3Model``: the pipeline reads the second-to-last hidden state)
QWEN3_4B: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "hidden_act": "silu",
}  # fmt: skip


def activation_bytes(width: int, height: int, images: int) -> int:
    """Transformer activations (bf16, inference): ``16 * N * D * 2`` bytes per image as for
    FLUX, ``N`` = image tokens + the largest caption (512), ``D`` = 3840; no negative pass."""
    tokens = (width // 16) * (height // 16) + MAX_SEQUENCE_LENGTH
    return 16 * tokens * Z_IMAGE_TRANSFORMER["dim"] * 2 * images


# -- tiny random-weight stand-in -----------------------------------------------------------------


def _build_tiny(folder: Path) -> None:
    """Z-Image at test size: FLUX.1's tiny VAE (scale 8, 16 latent channels, so sizes are
    multiples of 16 and token counts the real model's), a 16-wide Qwen3 encoder and the
    byte-level Qwen tokenizer made in code, one main and one refiner block per stream."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    from openfal.backends.local.tiny import qwen3_encoder, qwen_tokenizer

    encoder = qwen3_encoder(hidden_size=16, layers=2).model  # the real repo ships a Qwen3Model
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1, n_refiner_layers=1, n_heads=2,
        n_kv_heads=2, cap_feat_dim=encoder.config.hidden_size, axes_dims=(4, 6, 6), axes_lens=(1536, 512, 512),
    ).eval()  # fmt: skip
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),  # Turbo's scheduler config
        vae=tiny_vae(), text_encoder=encoder, tokenizer=qwen_tokenizer(), transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(folder)


MODELS = (
    Model(
        MODEL, "Tongyi-MAI/Z-Image-Turbo", "Z-Image Turbo (6B, 8 steps; text-to-image, image-to-image, LoRAs)", APACHE_2,
        PIPELINE_CLASS[TEXT],
        {
            "transformer": Component("diffusers.ZImageTransformer2DModel", Z_IMAGE_TRANSFORMER),
            "text_encoder": Component("transformers.Qwen3Model", QWEN3_4B, "Qwen3Config"),
            "vae": Component("diffusers.AutoencoderKL", FLUX_VAE),
        },
        _build_tiny, loras=True, activation_bytes=activation_bytes,
    ),
)  # fmt: skip

#: fal's list prices (fal.ai/models/fal-ai/z-image/turbo*, 2026-12): $0.005 per megapixel,
#: $0.0085 with LoRAs; prompt expansion's +$0.0025 is not charged (not applied here)
ENDPOINTS = (
    Endpoint("fal-ai/z-image/turbo", "Z-Image Turbo text to image", schemas.ZImageTurboInput, schemas.ZImageTurboOutput, TEXT, (MODEL,), {"per_megapixel": 0.005}),
    Endpoint(
        "fal-ai/z-image/turbo/image-to-image", "Z-Image Turbo image to image", schemas.ZImageTurboImageToImageInput, schemas.ZImageTurboOutput,
        IMAGE_TO_IMAGE, (MODEL,), {"per_megapixel": 0.005},
    ),
    Endpoint("fal-ai/z-image/turbo/lora", "Z-Image Turbo with LoRAs", schemas.ZImageTurboLoraInput, schemas.ZImageTurboOutput, TEXT, (MODEL,), {"per_megapixel": 0.0085}),
)  # fmt: skip


class ZImage(ImageFamily):
    name = "z-image"
    models = MODELS
    endpoints = ENDPOINTS
    #: the main layers and both refiners are ZImageTransformerBlocks
    compile_blocks = ("layers", "noise_refiner", "context_refiner")
    #: attention and SwiGLU of every block, and its adaLN modulation, as the LoRAs trained
    #: with diffusers and ai-toolkit target them
    lora_targets = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3", "adaLN_modulation.0")  # fmt: skip
    accelerated = True
    warmed_kinds = frozenset({TEXT})

    def plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> ImagePlan:
        endpoint = self.endpoint(endpoint_id)
        requested = input.get("image_size")
        size = sizes.image_size(requested) if requested not in (None, "auto") else None
        return ImagePlan(
            endpoint_id=endpoint_id,
            kind=endpoint.kind,
            models=endpoint.models,
            steps=int(input.get("num_inference_steps", 8)),
            guidance=GUIDANCE,
            strength=float(input["strength"]) if endpoint.kind == IMAGE_TO_IMAGE else None,
            size=size,
            loras=lora_refs(input),
            batchable=endpoint.kind == TEXT,
        )

    async def prepare(
        self, plan: ImagePlan, input: dict[str, Any], settings: Settings, options: LocalOptions, client: httpx.AsyncClient | None
    ) -> ImageCall:
        if plan.kind == TEXT:
            return ImageCall.text(plan)
        image = await fetch_image(input["image_url"], settings, field="image_url", client=client)
        width, height = plan.size or sizes.fit_area(image.width, image.height, options.image_to_image_max_area, grow=False)
        return ImageCall(plan, width, height, image.resize((width, height), Image.Resampling.LANCZOS))

    def pipeline_specs(self, plan: ImagePlan, folder: Callable[[str], Any]) -> list[PipelineSpec]:
        from openfal.backends.local.cache import PipelineSpec

        return [PipelineSpec(plan.model, folder(plan.model), PIPELINE_CLASS[plan.kind])]

    def call_pipeline(self, pipes: Sequence[Any], call: ImageCall, items: Sequence[ImageItem], callback: Callback) -> list[Image.Image]:
        plan = call.plan
        kwargs: dict[str, Any] = {
            "prompt": [item.prompt for item in items for _ in range(item.num_images)],
            "width": call.width,
            "height": call.height,
            "num_inference_steps": plan.steps,
            "guidance_scale": GUIDANCE,
            "generator": [g for item in items for g in item.generators()],
            "callback_on_step_end": callback,
            "max_sequence_length": MAX_SEQUENCE_LENGTH,
            "output_type": "pil",
        }
        if plan.kind == IMAGE_TO_IMAGE:
            kwargs.update(image=call.image, strength=plan.strength)
        return list(pipes[-1](**kwargs).images)

    def preview(self, latents: Any, width: int, height: int, row: int) -> bytes | None:
        """FLUX.1's latent->RGB projection: Z-Image denoises in FLUX.1's VAE space, with
        unpacked latents ``(B, 16, H/8, W/8)``, packed here as FLUX packs them."""
        from openfal.backends.local.previews import flux_preview

        b, c, h, w = latents.shape
        packed = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
        return flux_preview(packed, width, height, index=row)

    def notes(self, plan: ImagePlan, input: dict[str, Any]) -> list[str]:
        return prompt_expansion_notes(input)

    def warm_up(self, pipe: Any, width: int, height: int, images: int, model: str) -> None:
        import torch

        pipe(
            prompt=[WARMUP_PROMPT] * images,
            width=width,
            height=height,
            num_inference_steps=1,
            guidance_scale=GUIDANCE,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            generator=[torch.Generator("cpu").manual_seed(k) for k in range(images)],
            output_type="pil",
        )


FAMILY = ZImage()
