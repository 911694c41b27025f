"""FLUX.1: [dev], [schnell], Kontext [dev], Redux and Krea [dev] (Black Forest Labs, 2024-25).

| endpoint                                    | pipeline(s)                                 | weights             |
| ------------------------------------------- | ------------------------------------------- | ------------------- |
| fal-ai/flux-1/dev, /schnell, fal-ai/flux/*  | FluxPipeline                                | dev / schnell       |
| fal-ai/flux-1/dev/image-to-image            | FluxImg2ImgPipeline                         | dev                 |
| fal-ai/flux-1/dev/redux, /schnell/redux     | FluxPriorReduxPipeline -> FluxPipeline      | Redux + dev/schnell |
| fal-ai/flux-lora[/image-to-image]           | FluxPipeline / FluxImg2ImgPipeline + LoRAs  | dev                 |
| fal-ai/flux-pro/kontext[/max]               | FluxKontextPipeline                         | Kontext [dev]       |
| fal-ai/flux-pro/kontext[/max]/multi         | FluxKontextPipeline, stitched reference     | Kontext [dev]       |
| fal-ai/flux-pro/kontext[/max]/text-to-image | FluxKontextPipeline without a reference     | Kontext [dev]       |
| fal-ai/flux/krea[/image-to-image], -lora    | FluxPipeline / FluxImg2ImgPipeline          | Krea [dev]          |

Image-to-image has no ``image_size``: the output has the input's size (floored to 16,
scaled down past ``LocalOptions.image_to_image_max_area``). Kontext outputs follow
``aspect_ratio`` at ~1 MP, or, without it, the input's aspect ratio snapped to Kontext's
training resolutions; references are resized likewise and passed with
``_auto_resize=False`` and ``max_area`` = the output's area, so the pipeline keeps the
size chosen here (for the tiny set and real weights alike). ``acceleration`` is ignored.

Kontext [pro] and [max] are closed BFL models; FLUX.1 Kontext [dev] is the open
stand-in, so results differ from fal's. ``safety_tolerance`` and ``enhance_prompt``
have no local counterpart and are ignored. Krea [dev] is FLUX.1 [dev]'s architecture
with other weights: the same pipelines, another folder.

Multi-image Kontext is done by stitching: the references are scaled to a common height
and pasted side by side into one canvas, which is the single reference image (the usual
ComfyUI workflow; the community multi-image pipeline concatenates latents instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from openfal.backends.local import model_configs, sizes
from openfal.backends.local.families.contract import Component, Endpoint, Model
from openfal.backends.local.families.images import Callback, ImageCall, ImageFamily, ImageItem, ImagePlan, stitch
from openfal.endpoints import flux as schemas
from openfal.endpoints.licences import APACHE_2, FLUX_1_DEV_NON_COMMERCIAL
from openfal.fetch import fetch_image, fetch_images

if TYPE_CHECKING:
    import httpx
    import torch

    from openfal.backends.local.cache import PipelineSpec
    from openfal.backends.local.options import LocalOptions
    from openfal.config import Settings

TEXT = "text"
IMAGE_TO_IMAGE = "image-to-image"
REDUX = "redux"
KONTEXT = "kontext"
KONTEXT_MULTI = "kontext-multi"
KONTEXT_TEXT = "kontext-text"

REDUX_PRIOR = "flux-redux-dev"
PIPELINE_CLASS = {
    TEXT: "FluxPipeline",
    IMAGE_TO_IMAGE: "FluxImg2ImgPipeline",
    REDUX: "FluxPipeline",
    KONTEXT: "FluxKontextPipeline",
    KONTEXT_MULTI: "FluxKontextPipeline",
    KONTEXT_TEXT: "FluxKontextPipeline",
}
#: kinds whose requests can share a pipeline call (no per-request input image)
BATCHABLE = frozenset({TEXT, KONTEXT_TEXT})
#: the Redux base takes prompt embeddings from the prior: no text encoders needed
TEXT_ENCODERS = frozenset({"text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"})
#: T5 token budget: [schnell] is trained with 256, the others with 512
MAX_SEQUENCE_LENGTH = {"flux-schnell": 256}
REDUX_TEXT_TOKENS = 512

# -- the real architectures (public config.json files of black-forest-labs/FLUX.1-*) ----------

FLUX_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}  # fmt: skip
FLUX_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2,
    "norm_num_groups": 32, "sample_size": 1024, "use_quant_conv": False, "use_post_quant_conv": False,
    "shift_factor": 0.1159, "scaling_factor": 0.3611,
}  # fmt: skip
#: FLUX.1-Redux-dev: SigLIP so400m-patch14-384 and the Redux projector
SIGLIP_SO400M: dict[str, Any] = {
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
    "image_size": 384, "patch_size": 14,
}  # fmt: skip
REDUX_EMBEDDER: dict[str, Any] = {"redux_dim": 1152, "txt_in_features": 4096}


def _components(*, guidance_embeds: bool = True) -> dict[str, Component]:
    return {
        "transformer": Component("diffusers.FluxTransformer2DModel", {**FLUX_TRANSFORMER, "guidance_embeds": guidance_embeds}),
        "text_encoder": Component("transformers.CLIPTextModel", model_configs.CLIP_L_TEXT, "CLIPTextConfig"),
        "text_encoder_2": Component("transformers.T5EncoderModel", model_configs.T5_XXL_ENCODER, "T5Config"),
        "vae": Component("diffusers.AutoencoderKL", FLUX_VAE),
    }


def activation_bytes(model: str) -> Callable[[int, int, int], int]:
    """Transformer activations (bf16, inference): ``16 * N * D * 2`` bytes per image, ``N``
    tokens (image + text, plus the reference image's for Kontext), ``D`` = 3072 (the
    single block's MLP, GELU, concat and QKV tensors are live together; attention runs
    in SDPA kernels with no N^2 matrix)."""
    hidden = FLUX_TRANSFORMER["num_attention_heads"] * FLUX_TRANSFORMER["attention_head_dim"]
    references = 2 if model == "flux-kontext-dev" else 1  # the reference image's tokens join the sequence

    def estimate(width: int, height: int, images: int) -> int:
        tokens = (width // 16) * (height // 16) * references + MAX_SEQUENCE_LENGTH.get(model, 512)
        return 16 * tokens * hidden * 2 * images

    return estimate


# -- tiny random-weight stand-ins ---------------------------------------------------------------


def tiny_vae() -> Any:
    """FLUX's VAE shape (4 levels: scale 8; 16 latent channels; FLUX's shift and scale),
    8 channels wide."""
    import torch
    from diffusers import AutoencoderKL

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


def tiny_transformer(*, guidance_embeds: bool) -> Any:
    from diffusers import FluxTransformer2DModel

    from openfal.backends.local.tiny import CLIP_DIM, T5_DIM

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


def dev_scheduler() -> Any:
    """FLUX.1 [dev] / Kontext [dev]'s scheduler config (resolution-dependent shift)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
    )


def _build_tiny(pipeline: str, *, guidance_embeds: bool = True, seed: int | None = None) -> Callable[[Path], None]:
    """A tiny FLUX pipeline sharing the text encoders and VAE of the others (as the real
    repositories ship the same files); ``seed`` gives a model of the same architecture
    its own transformer weights (Krea beside dev)."""

    def build(folder: Path) -> None:
        import diffusers
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler

        from openfal.backends.local.tiny import text_components

        scheduler = dev_scheduler() if guidance_embeds else FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
        if seed is not None:
            torch.manual_seed(seed)
        pipe = getattr(diffusers, pipeline)(
            scheduler=scheduler, vae=tiny_vae(), transformer=tiny_transformer(guidance_embeds=guidance_embeds), **text_components()
        )
        pipe.save_pretrained(folder)

    return build


def _build_tiny_redux(folder: Path) -> None:
    """The Redux prior: SigLIP vision tower + Redux projector into T5 space.

    The tiny prior also carries the tiny text encoders. The real FLUX.1-Redux-dev has
    none, and the prior then fills zero text embeddings of the hard-coded real widths
    (512x4096, 768) that the tiny transformer cannot take; with encoders present it
    uses the zero embeddings the backend passes, sized from the base transformer, so
    the backend makes the same call for tiny and real weights.
    """
    from diffusers import FluxPriorReduxPipeline
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    from openfal.backends.local.tiny import T5_DIM, text_components

    siglip = SiglipVisionModel(
        SiglipVisionConfig(hidden_size=16, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    ).eval()
    pipe = FluxPriorReduxPipeline(
        image_encoder=siglip,
        feature_extractor=SiglipImageProcessor(size={"height": 32, "width": 32}),
        image_embedder=ReduxImageEncoder(redux_dim=16, txt_in_features=T5_DIM).eval(),
        **text_components(),
    )
    pipe.save_pretrained(folder)


MODELS = (
    Model(
        "flux-dev", "black-forest-labs/FLUX.1-dev", "FLUX.1 [dev] (text-to-image, image-to-image, Redux base)",
        FLUX_1_DEV_NON_COMMERCIAL, "FluxPipeline", _components(), _build_tiny("FluxPipeline"), gated=True, loras=True,
        activation_bytes=activation_bytes("flux-dev"),
    ),
    Model(
        "flux-schnell", "black-forest-labs/FLUX.1-schnell", "FLUX.1 [schnell] (text-to-image, Redux base)", APACHE_2,
        "FluxPipeline", _components(guidance_embeds=False), _build_tiny("FluxPipeline", guidance_embeds=False),
        activation_bytes=activation_bytes("flux-schnell"),
    ),
    Model(
        "flux-kontext-dev", "black-forest-labs/FLUX.1-Kontext-dev", "FLUX.1 Kontext [dev], the open stand-in for Kontext [pro] and [max]",
        FLUX_1_DEV_NON_COMMERCIAL, "FluxKontextPipeline", _components(), _build_tiny("FluxKontextPipeline"), gated=True, loras=True,
        activation_bytes=activation_bytes("flux-kontext-dev"),
    ),
    Model(
        REDUX_PRIOR, "black-forest-labs/FLUX.1-Redux-dev", "FLUX.1 Redux [dev] image prior", FLUX_1_DEV_NON_COMMERCIAL,
        "FluxPriorReduxPipeline",
        {
            "image_encoder": Component("transformers.SiglipVisionModel", SIGLIP_SO400M, "SiglipVisionConfig"),
            "image_embedder": Component("diffusers.pipelines.flux.modeling_flux.ReduxImageEncoder", REDUX_EMBEDDER),
        },
        _build_tiny_redux, gated=True,
    ),
    Model(
        "flux-krea-dev", "black-forest-labs/FLUX.1-Krea-dev", "FLUX.1 Krea [dev] (FLUX.1 [dev]'s architecture, Krea's weights)",
        FLUX_1_DEV_NON_COMMERCIAL, "FluxPipeline", _components(), _build_tiny("FluxPipeline", seed=7), gated=True, loras=True,
        activation_bytes=activation_bytes("flux-krea-dev"),
    ),
)  # fmt: skip

_KONTEXT = ("flux-kontext-dev",)
_PER_MP = "per_megapixel"


def _e(endpoint_id: str, title: str, input_model: Any, kind: str, models: tuple[str, ...], price: dict[str, float], output: Any = None) -> Endpoint:
    return Endpoint(endpoint_id, title, input_model, output or schemas.FluxOutput, kind, models, price)


ENDPOINTS = (
    _e("fal-ai/flux-1/dev", "FLUX.1 [dev] text to image", schemas.FluxDevInput, TEXT, ("flux-dev",), {_PER_MP: 0.025}),
    _e("fal-ai/flux-1/dev/image-to-image", "FLUX.1 [dev] image to image", schemas.FluxDevImageToImageInput, IMAGE_TO_IMAGE, ("flux-dev",), {_PER_MP: 0.03}),
    _e("fal-ai/flux-1/dev/redux", "FLUX.1 [dev] Redux", schemas.FluxDevReduxInput, REDUX, (REDUX_PRIOR, "flux-dev"), {_PER_MP: 0.025}),
    _e("fal-ai/flux-1/schnell", "FLUX.1 [schnell] text to image", schemas.FluxSchnellInput, TEXT, ("flux-schnell",), {_PER_MP: 0.003}),
    _e("fal-ai/flux-1/schnell/redux", "FLUX.1 [schnell] Redux", schemas.FluxSchnellReduxInput, REDUX, (REDUX_PRIOR, "flux-schnell"), {_PER_MP: 0.025}),
    _e("fal-ai/flux-pro/kontext", "FLUX.1 Kontext [pro] (local: Kontext [dev])", schemas.KontextInput, KONTEXT, _KONTEXT, {"per_image": 0.04}),
    _e("fal-ai/flux-pro/kontext/max", "FLUX.1 Kontext [max] (local: Kontext [dev])", schemas.KontextInput, KONTEXT, _KONTEXT, {"per_image": 0.08}),
    _e("fal-ai/flux-pro/kontext/multi", "FLUX.1 Kontext [pro] multi-image", schemas.KontextMultiInput, KONTEXT_MULTI, _KONTEXT, {"per_image": 0.04}, schemas.KontextRegistryOutput),
    _e("fal-ai/flux-pro/kontext/max/multi", "FLUX.1 Kontext [max] multi-image", schemas.KontextMultiInput, KONTEXT_MULTI, _KONTEXT, {"per_image": 0.08}, schemas.KontextRegistryOutput),
    _e("fal-ai/flux-pro/kontext/text-to-image", "FLUX.1 Kontext [pro] text to image", schemas.KontextTextToImageInput, KONTEXT_TEXT, _KONTEXT, {"per_image": 0.04}, schemas.KontextRegistryOutput),
    _e("fal-ai/flux-pro/kontext/max/text-to-image", "FLUX.1 Kontext [max] text to image", schemas.KontextTextToImageInput, KONTEXT_TEXT, _KONTEXT, {"per_image": 0.08}, schemas.KontextRegistryOutput),
    _e("fal-ai/flux-lora", "FLUX.1 [dev] with LoRAs", schemas.FluxLoraInput, TEXT, ("flux-dev",), {_PER_MP: 0.035}),
    _e("fal-ai/flux-lora/image-to-image", "FLUX.1 [dev] image to image with LoRAs", schemas.FluxLoraImageToImageInput, IMAGE_TO_IMAGE, ("flux-dev",), {_PER_MP: 0.035}),
    _e("fal-ai/flux-kontext/dev", "FLUX.1 Kontext [dev]", schemas.KontextDevInput, KONTEXT, _KONTEXT, {"per_image": 0.025}),
    _e("fal-ai/flux-kontext-lora", "FLUX.1 Kontext [dev] with LoRAs", schemas.KontextLoraInput, KONTEXT, _KONTEXT, {_PER_MP: 0.035}),
    _e("fal-ai/flux/dev", "FLUX.1 [dev] text to image (classic id)", schemas.ClassicFluxDevInput, TEXT, ("flux-dev",), {_PER_MP: 0.025}),
    _e("fal-ai/flux/dev/image-to-image", "FLUX.1 [dev] image to image (classic id)", schemas.ClassicFluxDevImageToImageInput, IMAGE_TO_IMAGE, ("flux-dev",), {_PER_MP: 0.03}),
    _e("fal-ai/flux/schnell", "FLUX.1 [schnell] text to image (classic id)", schemas.ClassicFluxSchnellInput, TEXT, ("flux-schnell",), {_PER_MP: 0.003}),
    _e("fal-ai/flux/krea", "FLUX.1 Krea [dev] text to image", schemas.FluxKreaInput, TEXT, ("flux-krea-dev",), {_PER_MP: 0.025}),
    _e("fal-ai/flux/krea/image-to-image", "FLUX.1 Krea [dev] image to image", schemas.FluxKreaImageToImageInput, IMAGE_TO_IMAGE, ("flux-krea-dev",), {_PER_MP: 0.03}),
    _e("fal-ai/flux-krea-lora", "FLUX.1 Krea [dev] with LoRAs", schemas.FluxKreaLoraInput, TEXT, ("flux-krea-dev",), {_PER_MP: 0.035}),
)  # fmt: skip


class Flux1(ImageFamily):
    name = "flux1"
    models = MODELS
    endpoints = ENDPOINTS
    compile_blocks = ("transformer_blocks", "single_transformer_blocks")
    #: every Linear of the double and single blocks (attention, MLP, modulation), as the
    #: LoRAs trained with diffusers, ai-toolkit and kohya target them
    lora_targets = (
        "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "ff.net.0.proj", "ff.net.2",
        "ff_context.net.0.proj", "ff_context.net.2", "norm1.linear", "norm1_context.linear", "norm.linear", "proj_mlp", "proj_out",
    )  # fmt: skip
    accelerated = True
    warmed_kinds = frozenset({TEXT, KONTEXT_TEXT})

    def plan(self, endpoint_id: str, input: dict[str, Any], options: LocalOptions) -> ImagePlan:
        endpoint = self.endpoint(endpoint_id)
        kind = endpoint.kind
        size: tuple[int, int] | None = None
        resolution = input.get("resolution_mode")
        if input.get("image_size") is not None:
            size = sizes.image_size(input["image_size"])
        elif input.get("aspect_ratio"):
            size = sizes.aspect_size(input["aspect_ratio"], options.kontext_area)
        elif resolution and ":" in resolution:
            size = sizes.aspect_size(resolution, options.kontext_area)
        # fal's Kontext [pro]/[max] have no step count (the server's); Kontext [dev]'s own endpoints do
        steps = int(input["num_inference_steps"]) if "num_inference_steps" in input else options.kontext_steps
        return ImagePlan(
            endpoint_id=endpoint_id,
            kind=kind,
            models=endpoint.models,
            steps=steps,
            guidance=float(input.get("guidance_scale", 3.5)),
            strength=float(input["strength"]) if kind == IMAGE_TO_IMAGE else None,
            size=size,
            loras=tuple((str(item["path"]), float(item.get("scale", 1.0))) for item in input.get("loras") or []),
            match_input=resolution == "match_input",
            batchable=kind in BATCHABLE,
        )

    async def prepare(
        self, plan: ImagePlan, input: dict[str, Any], settings: Settings, options: LocalOptions, client: httpx.AsyncClient | None
    ) -> ImageCall:
        if plan.kind in (TEXT, KONTEXT_TEXT):
            return ImageCall.text(plan)
        if plan.kind == KONTEXT_MULTI:
            images = await fetch_images(input["image_urls"], settings, field="image_urls", client=client)
            first = images[0]
            canvas = stitch(images)
            width, height = plan.size or sizes.kontext_size(first.width, first.height, options.kontext_area)
            ref_w, ref_h = sizes.fit_area(canvas.width, canvas.height, options.kontext_area)
            return ImageCall(plan, width, height, canvas.resize((ref_w, ref_h), Image.Resampling.LANCZOS))
        image = await fetch_image(input["image_url"], settings, field="image_url", client=client)
        if plan.kind == KONTEXT:
            ref_w, ref_h = sizes.kontext_size(image.width, image.height, options.kontext_area)
            width, height = plan.size or (ref_w, ref_h)
            if plan.match_input:
                width, height = sizes.fit_area(image.width, image.height, options.image_to_image_max_area, grow=False)
            return ImageCall(plan, width, height, image.resize((ref_w, ref_h), Image.Resampling.LANCZOS))
        if plan.kind == IMAGE_TO_IMAGE:
            width, height = plan.size or sizes.fit_area(image.width, image.height, options.image_to_image_max_area, grow=False)
            return ImageCall(plan, width, height, image.resize((width, height), Image.Resampling.LANCZOS))
        assert plan.size is not None  # redux: image_size is in its schema
        return ImageCall(plan, *plan.size, image=image)

    def pipeline_specs(self, plan: ImagePlan, folder: Callable[[str], Any]) -> list[PipelineSpec]:
        """The Redux prior (for Redux), then the pipeline that denoises."""
        from openfal.backends.local.cache import PipelineSpec

        without = TEXT_ENCODERS if plan.kind == REDUX else frozenset()
        main = PipelineSpec(plan.model, folder(plan.model), PIPELINE_CLASS[plan.kind], without)
        if plan.kind == REDUX:
            return [PipelineSpec(REDUX_PRIOR, folder(REDUX_PRIOR), "FluxPriorReduxPipeline"), main]
        return [main]

    def call_pipeline(self, pipes: Sequence[Any], call: ImageCall, items: Sequence[ImageItem], callback: Callback) -> list[Image.Image]:
        plan = call.plan
        pipe = pipes[-1]
        generators = [g for item in items for g in item.generators()]
        kwargs: dict[str, Any] = {
            "width": call.width,
            "height": call.height,
            "num_inference_steps": plan.steps,
            "guidance_scale": plan.guidance,
            "generator": generators,
            "callback_on_step_end": callback,
            "output_type": "pil",
        }
        if plan.kind == REDUX:
            kwargs.update(_redux_embeddings(pipe, pipes[0], call.image, len(generators)))
        else:
            kwargs["prompt"] = [item.prompt for item in items for _ in range(item.num_images)]
            kwargs["max_sequence_length"] = MAX_SEQUENCE_LENGTH.get(plan.model, 512)
        if plan.kind == IMAGE_TO_IMAGE:
            kwargs.update(image=call.image, strength=plan.strength)
        elif plan.kind.startswith(KONTEXT):
            kwargs.update(image=call.image, max_area=call.width * call.height, _auto_resize=False)
        return list(pipe(**kwargs).images)

    def preview(self, latents: Any, width: int, height: int, row: int) -> bytes | None:
        from openfal.backends.local.previews import flux_preview

        return flux_preview(latents, width, height, index=row)

    def report_prompt(self, plan: ImagePlan) -> bool:
        return plan.kind != REDUX

    def warm_up(self, pipe: Any, width: int, height: int, images: int, model: str) -> None:
        import torch

        # called exactly as requests call it (no_grad inside the pipeline, not inference
        # mode): compiled graphs are guarded on that global state
        pipe(
            prompt=["warm-up"] * images,
            width=width,
            height=height,
            num_inference_steps=1,
            max_sequence_length=MAX_SEQUENCE_LENGTH.get(model, 512),
            generator=[torch.Generator("cpu").manual_seed(k) for k in range(images)],
            output_type="pil",
        )


def _redux_embeddings(base: Any, prior: Any, image: Image.Image | None, count: int) -> dict[str, torch.Tensor]:
    """The prior's text+image embeddings for ``count`` images.

    Redux conditions on the image alone: the text part is zeros. The zeros are sized
    from the base transformer (4096x512 and 768 for real FLUX, as the prior hard-codes
    when it has no text encoders), so the same call serves the tiny set.
    """
    import torch

    config = base.transformer.config
    dtype = base.transformer.dtype
    device = base._execution_device
    out = prior(
        image=image,
        prompt_embeds=torch.zeros(1, REDUX_TEXT_TOKENS, config.joint_attention_dim, dtype=dtype, device=device),
        pooled_prompt_embeds=torch.zeros(1, config.pooled_projection_dim, dtype=dtype, device=device),
    )
    return {
        "prompt_embeds": out.prompt_embeds.to(dtype).expand(count, -1, -1),
        "pooled_prompt_embeds": out.pooled_prompt_embeds.to(dtype).expand(count, -1),
    }


FAMILY = Flux1()
