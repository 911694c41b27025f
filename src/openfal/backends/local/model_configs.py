"""Real component configs that several families share, copied from their public
``config.json`` files: memory plans are sized from the real architectures (built on the
``meta`` device: shapes, no weights) without any download. Each family keeps the configs
only it uses in its own file.

Sources: black-forest-labs/FLUX.1-dev (``text_encoder/``: CLIP ViT-L/14 text tower;
``text_encoder_2/``: T5 v1.1 XXL encoder, which LTX-Video ships too),
Falconsai/nsfw_image_detection (ViT-base/16, the safety checker).
"""

from __future__ import annotations

from typing import Any

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
VIT_BASE_NSFW: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "image_size": 224, "patch_size": 16, "num_labels": 2,
}  # fmt: skip
