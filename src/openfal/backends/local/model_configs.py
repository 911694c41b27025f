"""The component configs of the real models, copied from their public ``config.json``
files, so that memory plans are sized from the real architectures (built on the
``meta`` device: shapes, no weights) without any download.

Sources: black-forest-labs/FLUX.1-dev, FLUX.1-schnell and FLUX.1-Kontext-dev
(``transformer/``, ``text_encoder/`` (CLIP ViT-L/14 text tower), ``text_encoder_2/``
(T5 v1.1 XXL encoder), ``vae/``), FLUX.1-Redux-dev (``image_encoder/``: SigLIP
so400m-patch14-384; ``image_embedder/``), Lightricks/LTX-Video 0.9 (the defaults of
diffusers' ``LTXVideoTransformer3DModel`` and ``AutoencoderKLLTXVideo`` are that
model's), Falconsai/nsfw_image_detection (ViT-base/16).
"""

from __future__ import annotations

from typing import Any

FLUX_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}  # fmt: skip
CLIP_L_TEXT: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu", "bos_token_id": 0, "eos_token_id": 2,
    "pad_token_id": 1,
}  # fmt: skip
T5_XXL_ENCODER: dict[str, Any] = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "pad_token_id": 0, "eos_token_id": 1,
}  # fmt: skip
FLUX_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2,
    "norm_num_groups": 32, "sample_size": 1024, "use_quant_conv": False, "use_post_quant_conv": False,
    "shift_factor": 0.1159, "scaling_factor": 0.3611,
}  # fmt: skip
SIGLIP_SO400M: dict[str, Any] = {
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
    "image_size": 384, "patch_size": 14,
}  # fmt: skip
REDUX_EMBEDDER: dict[str, Any] = {"redux_dim": 1152, "txt_in_features": 4096}
VIT_BASE_NSFW: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "image_size": 224, "patch_size": 16, "num_labels": 2,
}  # fmt: skip

#: model -> component name -> (builder kind, config)
COMPONENTS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "flux-dev": {
        "transformer": ("flux_transformer", FLUX_TRANSFORMER),
        "text_encoder": ("clip_text", CLIP_L_TEXT),
        "text_encoder_2": ("t5_encoder", T5_XXL_ENCODER),
        "vae": ("vae", FLUX_VAE),
    },
    "flux-schnell": {
        "transformer": ("flux_transformer", {**FLUX_TRANSFORMER, "guidance_embeds": False}),
        "text_encoder": ("clip_text", CLIP_L_TEXT),
        "text_encoder_2": ("t5_encoder", T5_XXL_ENCODER),
        "vae": ("vae", FLUX_VAE),
    },
    "flux-kontext-dev": {
        "transformer": ("flux_transformer", FLUX_TRANSFORMER),
        "text_encoder": ("clip_text", CLIP_L_TEXT),
        "text_encoder_2": ("t5_encoder", T5_XXL_ENCODER),
        "vae": ("vae", FLUX_VAE),
    },
    "flux-redux-dev": {
        "image_encoder": ("siglip_vision", SIGLIP_SO400M),
        "image_embedder": ("redux_embedder", REDUX_EMBEDDER),
    },
    "ltx-video": {
        "transformer": ("ltx_transformer", {}),
        "text_encoder": ("t5_encoder", T5_XXL_ENCODER),
        "vae": ("ltx_vae", {}),
    },
    "safety-checker": {"classifier": ("vit_classifier", VIT_BASE_NSFW)},
}
