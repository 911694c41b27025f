"""FLUX.2: [dev] (32B, Mistral Small 3.1 text encoder) and [klein] 4B / 9B (Qwen3 text
encoders, step-distilled to 4 steps), Black Forest Labs 2025-26.

| endpoint                                          | pipeline            | weights         |
| ------------------------------------------------- | ------------------- | --------------- |
| fal-ai/flux-2, /lora                              | Flux2Pipeline       | FLUX.2 [dev]    |
| fal-ai/flux-2/edit, /lora/edit                    | Flux2Pipeline       | FLUX.2 [dev]    |
| fal-ai/flux-2/klein/4b, /4b/lora, /4b/edit        | Flux2KleinPipeline  | [klein] 4B      |
| fal-ai/flux-2/klein/9b, /9b/edit                  | Flux2KleinPipeline  | [klein] 9B      |

One pipeline class per model serves text-to-image and edits: FLUX.2 conditions on up to
four reference images by appending their latent tokens to the sequence (diffusers'
``image=[...]``), so an edit is the text-to-image call plus ``image``. Edits take the
output size from ``image_size``, or, without it, from the first reference image, scaled
down to ``LocalOptions.image_to_image_max_area`` (1 MP: diffusers' own cap for references)
and floored to 16. References are scaled down the same way before the call.

[klein] is step-distilled without guidance (``is_distilled``): it is called with
``guidance_scale=1`` and its endpoints have no ``guidance_scale`` field. [dev] is
guidance-distilled: ``guidance_scale`` goes into the transformer's guidance embedding.

Fields not honoured locally, logged on the request: ``enable_prompt_expansion`` (fal
rewrites the prompt with an LLM; no prompt model is installed here). ``acceleration``
has no effect beyond the server's own acceleration profile (as for FLUX.1).

FLUX.2 [dev]'s ``tokenizer`` folder is a ``PixtralProcessor`` (Mistral Small 3.1's), whose
class needs torchvision to construct; the pipeline only tokenises text with it (its image
half serves prompt upsampling, which openfal does not run), so the family loads the
folder's tokenizer itself (``own_components``) and no torchvision is needed.

Licences: FLUX.2 [dev] and [klein] 9B: FLUX Non-Commercial License (gated on Hugging
Face); [klein] 4B: Apache-2.0.

Prices (fal's list prices, dollars per output megapixel; fal also counts the reference
images' megapixels on edits, which openfal's accounting does not):
* fal-ai/flux-2, /edit: 0.012 (lumenfall.ai's FLUX.2 [dev] page quoting fal's official
  pricing, 2025-12);
* fal-ai/flux-2/lora, /lora/edit: 0.021 (fal's model page as remembered; no stored copy
  was found: check before relying on it);
* fal-ai/flux-2/klein/4b and /4b/lora: 0.009 (fal.ai/learn "Flux 2 [klein] User Guide" and
  "Prompt Guide", 2026-01); /4b/edit: 0.010 (lumenfall.ai quoting fal);
* fal-ai/flux-2/klein/9b: 0.006 (fal.ai/models/fal-ai/flux-2/klein/9b/llms.txt);
  /9b/edit: 0.011 (lumenfall.ai quoting fal).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from openfal.backends.local import sizes
from openfal.backends.local.families.contract import Component, Endpoint, Model, prompt_expansion_notes
from openfal.backends.local.families.images import Callback, ImageCall, ImageFamily, ImageItem, ImagePlan
from openfal.endpoints import flux2 as schemas
from openfal.endpoints.licences import APACHE_2, FLUX_NON_COMMERCIAL
from openfal.errors import InputRejected, field_loc
from openfal.fetch import fetch_images

if TYPE_CHECKING:
    import httpx

    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.options import LocalOptions
    from openfal.config import Settings

TEXT = "text"
EDIT = "edit"

DEV = "flux-2-dev"
KLEIN_4B = "flux-2-klein-4b"
KLEIN_9B = "flux-2-klein-9b"
PIPELINE = {DEV: "Flux2Pipeline", KLEIN_4B: "Flux2KleinPipeline", KLEIN_9B: "Flux2KleinPipeline"}
#: text tokens per prompt (both pipelines pad to 512)
MAX_SEQUENCE_LENGTH = 512
#: diffusers' Flux2ImageProcessor refuses smaller reference images
MIN_REFERENCE_SIDE = 64
#: reference images counted in the activation estimate of a memory plan (see activation_bytes)
PLANNED_REFERENCES = 1

# -- the real architectures, copied from the public config.json files ---------------------------
# transformer: black-forest-labs/FLUX.2-dev, FLUX.2-klein-4B, FLUX.2-klein-9B (transformer/
# config.json; the same values as diffusers' scripts/convert_flux2_to_diffusers.py);
# vae: AutoencoderKLFlux2 (vae/config.json, shared by all three); text encoders:
# mistralai/Mistral-Small-3.1-24B-Instruct-2503 (FLUX.2-dev's text_encoder/, the values of
# transformers' Mistral3Config defaults), Qwen/Qwen3-4B and Qwen/Qwen3-8B ([klein]'s).

_TRANSFORMER_COMMON: dict[str, Any] = {
    "patch_size": 1, "in_channels": 128, "attention_head_dim": 128, "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32), "rope_theta": 2000, "eps": 1e-6,
}  # fmt: skip
DEV_TRANSFORMER: dict[str, Any] = {
    **_TRANSFORMER_COMMON, "num_layers": 8, "num_single_layers": 48, "num_attention_heads": 48, "joint_attention_dim": 15360,
    "guidance_embeds": True,
}  # fmt: skip
KLEIN_4B_TRANSFORMER: dict[str, Any] = {
    **_TRANSFORMER_COMMON, "num_layers": 5, "num_single_layers": 20, "num_attention_heads": 24, "joint_attention_dim": 7680,
    "guidance_embeds": False,
}  # fmt: skip
KLEIN_9B_TRANSFORMER: dict[str, Any] = {
    **_TRANSFORMER_COMMON, "num_layers": 8, "num_single_layers": 24, "num_attention_heads": 32, "joint_attention_dim": 12288,
    "guidance_embeds": False,
}  # fmt: skip
FLUX2_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "act_fn": "silu", "latent_channels": 32,
    "norm_num_groups": 32, "sample_size": 1024, "use_quant_conv": True, "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}  # fmt: skip
MISTRAL_SMALL_3_1: dict[str, Any] = {
    "text_config": {
        "model_type": "mistral", "vocab_size": 131072, "hidden_size": 5120, "intermediate_size": 32768, "num_hidden_layers": 40,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5, "rope_theta": 1e9, "sliding_window": None, "hidden_act": "silu", "tie_word_embeddings": False,
    },
    "vision_config": {
        "model_type": "pixtral", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
        "head_dim": 64, "image_size": 1540, "patch_size": 14, "hidden_act": "gelu",
    },
    "image_token_index": 10, "projector_hidden_act": "gelu", "spatial_merge_size": 2, "multimodal_projector_bias": False,
    "vision_feature_layer": -1, "tie_word_embeddings": False,
}  # fmt: skip
_QWEN3_COMMON: dict[str, Any] = {
    "vocab_size": 151936, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000, "hidden_act": "silu",
}  # fmt: skip
QWEN3_4B: dict[str, Any] = {**_QWEN3_COMMON, "hidden_size": 2560, "intermediate_size": 9728, "tie_word_embeddings": True}
QWEN3_8B: dict[str, Any] = {**_QWEN3_COMMON, "hidden_size": 4096, "intermediate_size": 12288, "tie_word_embeddings": False}


def _components(transformer: dict[str, Any], text_encoder: Component) -> dict[str, Component]:
    return {
        "transformer": Component("diffusers.Flux2Transformer2DModel", transformer),
        "text_encoder": text_encoder,
        "vae": Component("diffusers.AutoencoderKLFlux2", FLUX2_VAE),
    }


def activation_bytes(transformer: dict[str, Any]) -> Callable[[int, int, int], int]:
    """Transformer activations (bf16, inference), FLUX.1's estimate at FLUX.2's width:
    ``16 * N * D * 2`` bytes per image, ``D`` the hidden width, ``N`` the image tokens
    ((W/16)(H/16)), one reference image's as many again (an edit), and 512 text tokens.
    A four-reference edit of four images at the largest size needs more than planned: the
    engine answers an out-of-memory run 503 and frees the device (oom.py)."""
    hidden = transformer["num_attention_heads"] * transformer["attention_head_dim"]

    def estimate(width: int, height: int, images: int) -> int:
        tokens = (width // 16) * (height // 16) * (1 + PLANNED_REFERENCES) + MAX_SEQUENCE_LENGTH
        return 16 * tokens * hidden * 2 * images

    return estimate


# -- tiny random-weight stand-ins -------------------------------------------------------------

#: the tiny text encoders' width; FLUX.2 stacks three hidden-state layers, so the tiny
#: transformers take 3 x 16
TINY_TEXT_DIM = 16
#: Mistral's special tokens in Mistral Small 3.1's order (tekken ids 0-10 hold them too)
MISTRAL_SPECIAL = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "<pad>")
#: Mistral Small 3.1's chat template reduced to what Flux2Pipeline sends: a system turn and
#: user turns whose content is a list of text (or image) parts
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}{% else %}{% set ns = namespace(text='') %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{% set ns.text = ns.text + part['text'] %}"
    "{% else %}{% set ns.text = ns.text + '[IMG]' %}{% endif %}{% endfor %}{% set text = ns.text %}{% endif %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}{{ eos_token }}{% endif %}{% endfor %}"
)
#: what FLUX.2-dev's tokenizer/processor_config.json declares (the folder stays loadable by
#: AutoProcessor where torchvision is installed)
PIXTRAL_PROCESSOR = {"processor_class": "PixtralProcessor", "patch_size": 14, "spatial_merge_size": 2, "image_token": "[IMG]",
                     "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}  # fmt: skip


def mistral_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges (every byte is a token), Mistral's special
    tokens and a chat template: what FLUX.2 [dev]'s Mistral encoder is fed with."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {token: i for i, token in enumerate(MISTRAL_SPECIAL)}
    for char in bytes_to_unicode().values():
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=list(MISTRAL_SPECIAL[3:10]), model_max_length=131072,
    )  # fmt: skip
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def tiny_mistral_encoder() -> Any:
    """Mistral3ForConditionalGeneration (Mistral text tower + Pixtral vision tower), 16 wide
    with 30 text layers: FLUX.2 [dev] reads hidden states 10, 20 and 30."""
    import torch
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    text = {
        "model_type": "mistral", "vocab_size": len(MISTRAL_SPECIAL) + 256, "hidden_size": TINY_TEXT_DIM, "intermediate_size": 32,
        "num_hidden_layers": 30, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "max_position_embeddings": 1024,
        "sliding_window": None, "rope_theta": 1e9, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 10,
    }  # fmt: skip
    vision = {"model_type": "pixtral", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "head_dim": 8, "image_size": 64, "patch_size": 8}  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        config = Mistral3Config(text_config=text, vision_config=vision, image_token_index=5, spatial_merge_size=2, tie_word_embeddings=False)
        return Mistral3ForConditionalGeneration(config).eval()


def tiny_vae() -> Any:
    """AutoencoderKLFlux2's shape (4 levels: scale 8; 32 latent channels, 128 once
    patchified), 8 channels wide; built under a fixed seed so every FLUX.2 model saves the
    same VAE (the real repositories ship the same one)."""
    import torch
    from diffusers import AutoencoderKLFlux2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        return AutoencoderKLFlux2(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=32, norm_num_groups=4, sample_size=64,
        ).eval()  # fmt: skip


def tiny_transformer(*, guidance_embeds: bool) -> Any:
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=3 * TINY_TEXT_DIM, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=guidance_embeds,
    ).eval()  # fmt: skip


def _build_tiny_dev(folder: Path) -> None:
    """Flux2Pipeline with a tiny Mistral3 encoder, saved in FLUX.2-dev's layout: the
    ``tokenizer`` folder holds the tokenizer files and a PixtralProcessor config, and
    model_index.json names PixtralProcessor as the real repository does (so loading takes
    the path real weights take, ``own_components`` included)."""
    import torch
    from diffusers import Flux2Pipeline

    from openfal.backends.local.families.flux1 import dev_scheduler

    torch.manual_seed(11)
    pipe = Flux2Pipeline(
        scheduler=dev_scheduler(), vae=tiny_vae(), text_encoder=tiny_mistral_encoder(), tokenizer=mistral_tokenizer(),
        transformer=tiny_transformer(guidance_embeds=True),
    )  # fmt: skip
    pipe.save_pretrained(folder)
    (folder / "tokenizer" / "processor_config.json").write_text(json.dumps(PIXTRAL_PROCESSOR, indent=2))
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "PixtralProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def _build_tiny_klein(*, seed: int, encoder_seed: int) -> Callable[[Path], None]:
    """Flux2KleinPipeline (step-distilled) with the shared tiny Qwen tokenizer and a tiny
    Qwen3 encoder; ``seed`` gives 4B and 9B their own transformer weights."""

    def build(folder: Path) -> None:
        import torch
        from diffusers import Flux2KleinPipeline

        from openfal.backends.local.families.flux1 import dev_scheduler
        from openfal.backends.local.tiny import qwen3_encoder, qwen_tokenizer

        torch.manual_seed(seed)
        pipe = Flux2KleinPipeline(
            scheduler=dev_scheduler(), vae=tiny_vae(), text_encoder=qwen3_encoder(hidden_size=TINY_TEXT_DIM, seed=encoder_seed),
            tokenizer=qwen_tokenizer(), transformer=tiny_transformer(guidance_embeds=False), is_distilled=True,
        )  # fmt: skip
        pipe.save_pretrained(folder)

    return build


def load_mistral_tokenizer(folder: Path) -> Any:
    """The tokenizer of a PixtralProcessor folder, with the processor's chat template
    (``chat_template.jinja``, or the legacy ``chat_template.json``) when the tokenizer's own
    files carry none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    legacy = folder / "chat_template.json"
    if tokenizer.chat_template is None and legacy.is_file():
        tokenizer.chat_template = json.loads(legacy.read_text())["chat_template"]
    return tokenizer


MODELS = (
    Model(
        DEV, "black-forest-labs/FLUX.2-dev", "FLUX.2 [dev] (32B; text-to-image and multi-reference editing)", FLUX_NON_COMMERCIAL,
        PIPELINE[DEV],
        _components(DEV_TRANSFORMER, Component("transformers.Mistral3ForConditionalGeneration", MISTRAL_SMALL_3_1, "Mistral3Config")),
        _build_tiny_dev, gated=True, loras=True, activation_bytes=activation_bytes(DEV_TRANSFORMER),
    ),
    Model(
        KLEIN_4B, "black-forest-labs/FLUX.2-klein-4B", "FLUX.2 [klein] 4B (step-distilled, 4 steps; Apache-2.0)", APACHE_2,
        PIPELINE[KLEIN_4B], _components(KLEIN_4B_TRANSFORMER, Component("transformers.Qwen3ForCausalLM", QWEN3_4B, "Qwen3Config")),
        _build_tiny_klein(seed=12, encoder_seed=3), loras=True, activation_bytes=activation_bytes(KLEIN_4B_TRANSFORMER),
    ),
    Model(
        KLEIN_9B, "black-forest-labs/FLUX.2-klein-9B", "FLUX.2 [klein] 9B (step-distilled, 4 steps)", FLUX_NON_COMMERCIAL,
        PIPELINE[KLEIN_9B], _components(KLEIN_9B_TRANSFORMER, Component("transformers.Qwen3ForCausalLM", QWEN3_8B, "Qwen3Config")),
        _build_tiny_klein(seed=13, encoder_seed=4), gated=True, activation_bytes=activation_bytes(KLEIN_9B_TRANSFORMER),
    ),
)  # fmt: skip

_PER_MP = "per_megapixel"


def _e(endpoint_id: str, title: str, input_model: Any, kind: str, model: str, per_mp: float) -> Endpoint:
    return Endpoint(endpoint_id, title, input_model, schemas.Flux2Output, kind, (model,), {_PER_MP: per_mp})


ENDPOINTS = (
    _e("fal-ai/flux-2", "FLUX.2 [dev] text to image", schemas.Flux2Input, TEXT, DEV, 0.012),
    _e("fal-ai/flux-2/edit", "FLUX.2 [dev] edit (up to 4 reference images)", schemas.Flux2EditInput, EDIT, DEV, 0.012),
    _e("fal-ai/flux-2/lora", "FLUX.2 [dev] with LoRAs", schemas.Flux2LoraInput, TEXT, DEV, 0.021),
    _e("fal-ai/flux-2/lora/edit", "FLUX.2 [dev] edit with LoRAs", schemas.Flux2LoraEditInput, EDIT, DEV, 0.021),
    _e("fal-ai/flux-2/klein/4b", "FLUX.2 [klein] 4B text to image", schemas.Flux2Klein4bInput, TEXT, KLEIN_4B, 0.009),
    _e("fal-ai/flux-2/klein/4b/edit", "FLUX.2 [klein] 4B edit", schemas.Flux2Klein4bEditInput, EDIT, KLEIN_4B, 0.010),
    _e("fal-ai/flux-2/klein/4b/lora", "FLUX.2 [klein] 4B with LoRAs", schemas.Flux2Klein4bLoraInput, TEXT, KLEIN_4B, 0.009),
    _e("fal-ai/flux-2/klein/9b", "FLUX.2 [klein] 9B text to image", schemas.Flux2Klein9bInput, TEXT, KLEIN_9B, 0.006),
    _e("fal-ai/flux-2/klein/9b/edit", "FLUX.2 [klein] 9B edit", schemas.Flux2Klein9bEditInput, EDIT, KLEIN_9B, 0.011),
)  # fmt: skip


class Flux2(ImageFamily):
    name = "flux2"
    models = MODELS
    endpoints = ENDPOINTS
    compile_blocks = ("transformer_blocks", "single_transformer_blocks")
    #: every Linear of the double blocks (attention, added attention, SwiGLU feed-forwards)
    #: and the single blocks' fused QKV+MLP and output projections, as diffusers' FLUX.2
    #: LoRA training and ai-toolkit target them; the global modulation layers too
    lora_targets = (
        "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "ff.linear_in", "ff.linear_out",
        "ff_context.linear_in", "ff_context.linear_out", "attn.to_qkv_mlp_proj", "attn.to_out", "modulation_img.linear",
        "modulation_txt.linear", "single_stream_modulation.linear",
    )  # fmt: skip
    accelerated = True
    warmed_kinds = frozenset({TEXT})

    def plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> ImagePlan:
        endpoint = self.endpoint(endpoint_id)
        size = sizes.image_size(input["image_size"]) if input.get("image_size") is not None else None
        return ImagePlan(
            endpoint_id=endpoint_id,
            kind=endpoint.kind,
            models=endpoint.models,
            steps=int(input["num_inference_steps"]),
            # [klein] is step-distilled without guidance: diffusers' pipeline ignores it
            guidance=float(input["guidance_scale"]) if endpoint.model == DEV else 1.0,
            strength=None,
            size=size,
            loras=tuple((str(item["path"]), float(item.get("scale", 1.0))) for item in input.get("loras") or []),
            batchable=endpoint.kind == TEXT,
        )

    async def prepare(
        self, plan: ImagePlan, input: dict[str, Any], settings: Settings, options: LocalOptions, client: httpx.AsyncClient | None
    ) -> ImageCall:
        if plan.kind == TEXT:
            return ImageCall.text(plan)
        fetched = await fetch_images(input["image_urls"], settings, field="image_urls", client=client)
        references = tuple(_scaled(image, options.image_to_image_max_area) for image in fetched)
        for index, image in enumerate(references):
            if min(image.size) < MIN_REFERENCE_SIDE:
                message = f"The image is {image.width}x{image.height}: FLUX.2 references must be at least {MIN_REFERENCE_SIDE} px on each side"
                raise InputRejected([{"loc": field_loc(f"image_urls.{index}"), "msg": message, "type": "image_too_small"}], message)
        width, height = plan.size or references[0].size
        return ImageCall(plan, width, height, images=references)

    def pipeline_specs(self, plan: ImagePlan, folder: Callable[[str], Any]) -> list[PipelineSpec]:
        from openfal.backends.local.cache import PipelineSpec

        return [PipelineSpec(plan.model, folder(plan.model), PIPELINE[plan.model])]

    def own_components(self, model: str, folder: Path) -> dict[str, Any]:
        """FLUX.2 [dev]'s tokenizer, read from its PixtralProcessor folder (see the module docstring)."""
        if model != DEV:
            return {}
        return {"tokenizer": load_mistral_tokenizer(folder / "tokenizer")}

    def call_pipeline(self, pipes: Sequence[Any], call: ImageCall, items: Sequence[ImageItem], callback: Callback) -> list[Image.Image]:
        plan = call.plan
        kwargs: dict[str, Any] = {
            "prompt": [item.prompt for item in items for _ in range(item.num_images)],
            "width": call.width,
            "height": call.height,
            "num_inference_steps": plan.steps,
            "guidance_scale": plan.guidance,
            "generator": [g for item in items for g in item.generators()],
            "max_sequence_length": MAX_SEQUENCE_LENGTH,
            "callback_on_step_end": callback,
            "output_type": "pil",
        }
        if call.images:
            kwargs["image"] = list(call.images)
        return list(pipes[-1](**kwargs).images)

    def notes(self, plan: ImagePlan, input: dict[str, Any]) -> list[str]:
        return prompt_expansion_notes(input)

    def warm_up(self, pipe: Any, width: int, height: int, images: int, model: str) -> None:
        import torch

        # called exactly as requests call it (see Flux1.warm_up)
        pipe(
            prompt=["warm-up"] * images,
            width=width,
            height=height,
            num_inference_steps=1,
            guidance_scale=2.5 if model == DEV else 1.0,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            generator=[torch.Generator("cpu").manual_seed(k) for k in range(images)],
            output_type="pil",
        )


def _scaled(image: Image.Image, area: int) -> Image.Image:
    """``image`` scaled down to about ``area`` pixels, sides floored to 16."""
    width, height = sizes.fit_area(image.width, image.height, area, grow=False)
    if (width, height) == image.size:
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)


FAMILY = Flux2()
