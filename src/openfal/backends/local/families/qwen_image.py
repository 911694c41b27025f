"""Qwen-Image (Alibaba Qwen, 2025-08; 2512 and Edit-2511 in 2025-12): a 20B dual-stream
MMDiT, prompts encoded by Qwen2.5-VL-7B, images through a Wan-style VAE. Apache-2.0.

| endpoint                                      | pipeline                              | weights              |
| --------------------------------------------- | ------------------------------------- | -------------------- |
| fal-ai/qwen-image                             | QwenImagePipeline (+ LoRAs)           | qwen-image           |
| fal-ai/qwen-image-2512, /lora                 | QwenImagePipeline (+ LoRAs)           | qwen-image-2512      |
| fal-ai/qwen-image-edit-2511, /lora            | QwenImageEditPlusPipeline (+ LoRAs)   | qwen-image-edit-2511 |

fal's ``guidance_scale`` is Qwen-Image's true classifier-free guidance (diffusers'
``true_cfg_scale``, with ``negative_prompt`` as the unconditional prompt; at 1 or below
only the prompt is run). Text-to-image requests with the same size, steps, guidance,
negative prompt and LoRAs share a call.

Edits take one to three images: each is seen twice, by Qwen2.5-VL at ~384x384 (what the
model reads) and by the VAE at ~1 MP (what it keeps), as diffusers' edit-plus pipeline
resizes them; without ``image_size`` the output has the last image's size (floored to
16, scaled down past ``LocalOptions.image_to_image_max_area``). An edit runs alone
(the pipeline edits one prompt per call); its ``num_images`` share that call.

``use_turbo`` (fal's Lightning LoRA) has no local counterpart unless the request names
such a LoRA: it is accepted and the request's logs say it was not applied.

Qwen-Image-Edit-2511's ``processor`` folder is a ``Qwen2VLProcessor``, whose class needs
torchvision to construct in transformers 5 (its video half does); the edit pipeline only
gives it images, so the family loads the folder itself as ``ImageQwenProcessor``, the
same processor less its video half (``own_components``), and no torchvision is needed.
The tiny edit model is saved in the real layout (model_index.json names
Qwen2VLProcessor), so it loads the way real weights do.

Compiled engines: the text tokens are part of each block's input, so a compiled block is
specialised to the prompt's length as well as the size (see z_image.py); warm-up
compiles text-to-image shapes with one prompt, edits run eagerly.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from openfal.backends.local import sizes
from openfal.backends.local.families.contract import Component, Endpoint, Model
from openfal.backends.local.families.images import Callback, ImageCall, ImageFamily, ImageItem, ImagePlan, lora_refs
from openfal.endpoints import qwen_image as schemas
from openfal.endpoints.licences import APACHE_2
from openfal.fetch import fetch_images

if TYPE_CHECKING:
    import httpx

    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.options import LocalOptions
    from openfal.config import Settings

TEXT = "text"
EDIT = "edit"
PIPELINE_CLASS = {TEXT: "QwenImagePipeline", EDIT: "QwenImageEditPlusPipeline"}
QWEN_IMAGE, QWEN_IMAGE_2512, QWEN_EDIT_2511 = "qwen-image", "qwen-image-2512", "qwen-image-edit-2511"
#: the prompt budget of diffusers' Qwen pipelines (their default)
MAX_SEQUENCE_LENGTH = 512
#: the area diffusers' edit-plus pipeline gives each reference image for the VAE
EDIT_REFERENCE_AREA = 1024 * 1024
WARMUP_PROMPT = "warm-up"

# -- the real architectures (public config.json files of Qwen/Qwen-Image*) ----------------------

QWEN_TRANSFORMER: dict[str, Any] = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60, "attention_head_dim": 128, "num_attention_heads": 24,
    "joint_attention_dim": 3584, "guidance_embeds": False, "axes_dims_rope": (16, 56, 56),
}  # fmt: skip
QWEN_VAE: dict[str, Any] = {
    "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [], "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}  # fmt: skip
#: Qwen2.5-VL-7B-Instruct, the text encoder of every Qwen-Image model (its vision tower reads the edit references)
QWEN25_VL_7B: dict[str, Any] = {
    "text_config": {
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584, "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        "hidden_act": "silu", "in_channels": 3, "tokens_per_second": 2,
    },
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "tie_word_embeddings": False,
}  # fmt: skip


def _components(*, zero_cond_t: bool = False) -> dict[str, Component]:
    return {
        "transformer": Component("diffusers.QwenImageTransformer2DModel", {**QWEN_TRANSFORMER, "zero_cond_t": zero_cond_t}),
        "text_encoder": Component("transformers.Qwen2_5_VLForConditionalGeneration", QWEN25_VL_7B, "Qwen2_5_VLConfig"),
        "vae": Component("diffusers.AutoencoderKLQwenImage", QWEN_VAE),
    }


def activation_bytes(model: str) -> Callable[[int, int, int], int]:
    """Transformer activations (bf16, inference): ``16 * N * D * 2`` bytes per image as for
    FLUX, ``N`` tokens (image + a full 512-token prompt, plus three ~1 MP references for
    the edit model), ``D`` = 3072. The negative prompt runs after the prompt, not beside
    it, so guidance does not double the peak."""
    hidden = QWEN_TRANSFORMER["num_attention_heads"] * QWEN_TRANSFORMER["attention_head_dim"]
    references = schemas.MAX_EDIT_IMAGES * EDIT_REFERENCE_AREA // 256 if model == QWEN_EDIT_2511 else 0

    def estimate(width: int, height: int, images: int) -> int:
        tokens = (width // 16) * (height // 16) + references + MAX_SEQUENCE_LENGTH
        return 16 * tokens * hidden * 2 * images

    return estimate


# -- tiny random-weight stand-ins ---------------------------------------------------------------

#: the tiny tokenizer's ids for Qwen2.5-VL's vision tokens (tiny.qwen_tokenizer's order,
#: then ``<|video_pad|>`` added here)
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = 259, 260, 261, 264


@functools.cache
def image_qwen_processor() -> Any:
    """``ImageQwenProcessor``: Qwen2VLProcessor without its video half. transformers 5
    checks every sub-processor's class when it builds a processor, and the video one
    needs torchvision; images go through Qwen2VLProcessor's own code. Built on first use
    (this module is imported without transformers)."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageQwenProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any) -> None:
            self.image_token = "<|image_pad|>"
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageQwenProcessor


def tiny_tokenizer() -> Any:
    """tiny.qwen_tokenizer plus Qwen2.5-VL's ``<|video_pad|>`` (265 ids)."""
    from openfal.backends.local.tiny import qwen_tokenizer

    tokenizer = qwen_tokenizer()
    tokenizer.add_tokens(["<|video_pad|>"], special_tokens=True)
    return tokenizer


def tiny_text_encoder() -> Any:
    """Qwen2.5-VL at test size (16 wide, 2 text layers, a 1-block vision tower), built under
    a fixed seed so every Qwen-Image model saves byte-identical encoders (as the real
    repositories ship the same one)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        config = Qwen2_5_VLConfig(
            text_config={
                "vocab_size": VIDEO_PAD + 1, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "max_position_embeddings": 4096, "bos_token_id": None, "eos_token_id": 258, "pad_token_id": 256,
                "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1000000.0},
            },
            vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16, "fullatt_block_indexes": [0]},
            image_token_id=IMAGE_PAD, video_token_id=VIDEO_PAD, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
            bos_token_id=None, eos_token_id=258, pad_token_id=256, tie_word_embeddings=False,
        )  # fmt: skip
        return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_vae() -> Any:
    """The Qwen-Image VAE's shape (three 2x levels: scale 8, 16 latent channels, so sizes
    are multiples of 16 and token counts the real model's), 8 channels wide."""
    import torch
    from diffusers import AutoencoderKLQwenImage

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        return AutoencoderKLQwenImage(
            base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).eval()


def scheduler() -> Any:
    """Qwen-Image's scheduler config (exponential, resolution-dependent shift)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0, shift_terminal=0.02,
        time_shift_type="exponential", use_dynamic_shifting=True,
    )  # fmt: skip


def _build_tiny(*, seed: int, edit: bool = False) -> Callable[[Path], None]:
    """A tiny Qwen-Image pipeline; ``seed`` gives each model its own transformer weights,
    the edit model's transformer conditions its references at timestep 0 as 2511's does."""

    def build(folder: Path) -> None:
        import torch
        from diffusers import QwenImageEditPlusPipeline, QwenImagePipeline, QwenImageTransformer2DModel
        from transformers import Qwen2VLImageProcessorPil

        torch.manual_seed(seed)
        transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=16, axes_dims_rope=(8, 4, 4), zero_cond_t=edit,
        ).eval()  # fmt: skip
        tokenizer = tiny_tokenizer()
        parts = {
            "scheduler": scheduler(),
            "vae": tiny_vae(),
            "text_encoder": tiny_text_encoder(),
            "tokenizer": tokenizer,
            "transformer": transformer,
        }
        if edit:
            # Qwen2.5-VL's image processor (14 px patches, 2x2 merge), capped small for CPU
            images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
            QwenImageEditPlusPipeline(processor=image_qwen_processor()(images, tokenizer), **parts).save_pretrained(folder)
            index = json.loads((folder / "model_index.json").read_text())
            index["processor"] = ["transformers", "Qwen2VLProcessor"]  # as Qwen/Qwen-Image-Edit-2511 names it
            (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        else:
            QwenImagePipeline(**parts).save_pretrained(folder)

    return build


MODELS = (
    Model(
        QWEN_IMAGE, "Qwen/Qwen-Image", "Qwen-Image (20B; text rendering, commercial use)", APACHE_2, PIPELINE_CLASS[TEXT],
        _components(), _build_tiny(seed=11), loras=True, activation_bytes=activation_bytes(QWEN_IMAGE),
    ),
    Model(
        QWEN_IMAGE_2512, "Qwen/Qwen-Image-2512", "Qwen-Image-2512 (Qwen-Image's 2025-12 weights)", APACHE_2, PIPELINE_CLASS[TEXT],
        _components(), _build_tiny(seed=12), loras=True, activation_bytes=activation_bytes(QWEN_IMAGE_2512),
    ),
    Model(
        QWEN_EDIT_2511, "Qwen/Qwen-Image-Edit-2511", "Qwen-Image-Edit-2511 (edits one to three images)", APACHE_2, PIPELINE_CLASS[EDIT],
        _components(zero_cond_t=True), _build_tiny(seed=13, edit=True), loras=True, activation_bytes=activation_bytes(QWEN_EDIT_2511),
    ),
)  # fmt: skip

_PER_MP = "per_megapixel"
_OUT = schemas.QwenImageOutput

#: fal's list prices per megapixel (fal.ai model pages, 2026-12): Qwen-Image and 2512
#: $0.02, with LoRAs $0.025 [?]; Edit-2511 $0.03 (as fal-ai/qwen-image-edit), with LoRAs $0.035 [?]
ENDPOINTS = (
    Endpoint("fal-ai/qwen-image", "Qwen-Image text to image", schemas.QwenImageInput, _OUT, TEXT, (QWEN_IMAGE,), {_PER_MP: 0.02}),
    Endpoint("fal-ai/qwen-image-2512", "Qwen-Image-2512 text to image", schemas.QwenImage2512Input, _OUT, TEXT, (QWEN_IMAGE_2512,), {_PER_MP: 0.02}),
    Endpoint("fal-ai/qwen-image-2512/lora", "Qwen-Image-2512 with LoRAs", schemas.QwenImage2512LoraInput, _OUT, TEXT, (QWEN_IMAGE_2512,), {_PER_MP: 0.025}),
    Endpoint("fal-ai/qwen-image-edit-2511", "Qwen-Image-Edit-2511", schemas.QwenImageEdit2511Input, _OUT, EDIT, (QWEN_EDIT_2511,), {_PER_MP: 0.03}),
    Endpoint(
        "fal-ai/qwen-image-edit-2511/lora", "Qwen-Image-Edit-2511 with LoRAs", schemas.QwenImageEdit2511LoraInput, _OUT, EDIT,
        (QWEN_EDIT_2511,), {_PER_MP: 0.035},
    ),
)  # fmt: skip


class QwenImage(ImageFamily):
    name = "qwen-image"
    models = MODELS
    endpoints = ENDPOINTS
    compile_blocks = ("transformer_blocks",)
    #: every Linear of the dual-stream blocks (attention, both MLPs, both modulations), as
    #: the LoRAs trained with diffusers, ai-toolkit and DiffSynth target them
    lora_targets = (
        "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "img_mlp.net.0.proj", "img_mlp.net.2",
        "txt_mlp.net.0.proj", "txt_mlp.net.2", "img_mod.1", "txt_mod.1",
    )  # fmt: skip
    accelerated = True
    warmed_kinds = frozenset({TEXT})

    def plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> ImagePlan:
        endpoint = self.endpoint(endpoint_id)
        guidance = float(input.get("guidance_scale", 4.0))
        negative = str(input.get("negative_prompt") or "") if guidance > 1 else None
        return ImagePlan(
            endpoint_id=endpoint_id,
            kind=endpoint.kind,
            models=endpoint.models,
            steps=int(input.get("num_inference_steps", 28)),
            guidance=guidance,
            strength=None,
            size=sizes.image_size(input["image_size"]) if input.get("image_size") is not None else None,
            loras=lora_refs(input),
            batchable=endpoint.kind == TEXT,
            extra=(("negative_prompt", negative),),
        )

    async def prepare(
        self, plan: ImagePlan, input: dict[str, Any], settings: Settings, options: LocalOptions, client: httpx.AsyncClient | None
    ) -> ImageCall:
        if plan.kind == TEXT:
            return ImageCall.text(plan)
        images = await fetch_images(input["image_urls"], settings, field="image_urls", client=client)
        last = images[-1]
        width, height = plan.size or sizes.fit_area(last.width, last.height, options.image_to_image_max_area, grow=False)
        return ImageCall(plan, width, height, images=tuple(images))

    def pipeline_specs(self, plan: ImagePlan, folder: Callable[[str], Any]) -> list[PipelineSpec]:
        from openfal.backends.local.cache import PipelineSpec

        return [PipelineSpec(plan.model, folder(plan.model), PIPELINE_CLASS[plan.kind])]

    def own_components(self, model: str, folder: Path) -> dict[str, Any]:
        """Qwen-Image-Edit-2511's processor, read without its video half (see the module docstring)."""
        if model != QWEN_EDIT_2511:
            return {}
        return {"processor": image_qwen_processor().from_pretrained(folder / "processor")}

    def call_pipeline(self, pipes: Sequence[Any], call: ImageCall, items: Sequence[ImageItem], callback: Callback) -> list[Image.Image]:
        plan = call.plan
        negative = dict(plan.extra)["negative_prompt"]
        kwargs: dict[str, Any] = {
            "width": call.width,
            "height": call.height,
            "num_inference_steps": plan.steps,
            "true_cfg_scale": plan.guidance,
            "generator": [g for item in items for g in item.generators()],
            "callback_on_step_end": callback,
            "max_sequence_length": MAX_SEQUENCE_LENGTH,
            "output_type": "pil",
        }
        if plan.kind == EDIT:
            (item,) = items  # edits run alone: the pipeline takes one prompt
            kwargs.update(image=list(call.images), prompt=item.prompt, negative_prompt=negative, num_images_per_prompt=item.num_images)
        else:
            prompts = [item.prompt for item in items for _ in range(item.num_images)]
            kwargs.update(prompt=prompts, negative_prompt=[negative] * len(prompts) if negative is not None else None)
        return list(pipes[-1](**kwargs).images)

    def notes(self, plan: ImagePlan, input: dict[str, Any]) -> list[str]:
        if input.get("use_turbo"):
            return ["use_turbo is not applied on this server (fal's turbo LoRA is not installed): the request runs its full step count"]
        return []

    def warm_up(self, pipe: Any, width: int, height: int, images: int, model: str) -> None:
        """Text-to-image as requests call it (guidance on, with the default negative
        prompt). The edit model is not warmed: an edit's shapes follow its references."""
        import torch

        if model == QWEN_EDIT_2511:
            return
        pipe(
            prompt=[WARMUP_PROMPT] * images,
            negative_prompt=[" "] * images,
            true_cfg_scale=4.0,
            width=width,
            height=height,
            num_inference_steps=1,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            generator=[torch.Generator("cpu").manual_seed(k) for k in range(images)],
            output_type="pil",
        )


FAMILY = QwenImage()
