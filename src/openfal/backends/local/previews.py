"""Cheap per-step previews: a linear 16->3 projection of FLUX latents to RGB.

ComfyUI's ``Latent2RGBPreviewer`` factors for FLUX (``comfy/latent_formats.py``) map the
sampler-space latent, the same space as a diffusers FLUX pipeline's ``latents``, to a
1/8-scale RGB image in about half a millisecond on CPU; no VAE decode. Early steps
look like noise (the callback sees x_t, not the predicted x0) and sharpen as the
run proceeds.
"""

from __future__ import annotations

import io

import torch
from PIL import Image

FLUX_LATENT_RGB = [
    [-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433], [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115], [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499], [-0.1262, -0.0982, -0.0778],
]  # fmt: skip
FLUX_LATENT_RGB_BIAS = [-0.0329, -0.0718, -0.0851]
PREVIEW_MAX_SIDE = 512


def flux_preview(packed: torch.Tensor, width: int, height: int, *, index: int = 0) -> bytes:
    """A JPEG of batch item ``index`` of packed FLUX latents ``(B, (H/16)*(W/16), 64)``."""
    latent_h, latent_w = height // 16, width // 16
    item = packed[index].detach().float().cpu()
    # unpack 2x2 patches: (h, w, c, 2, 2) -> (c, 2h, 2w), as FluxPipeline._unpack_latents
    item = item.view(latent_h, latent_w, 16, 2, 2).permute(2, 0, 3, 1, 4).reshape(16, latent_h * 2, latent_w * 2)
    factors = torch.tensor(FLUX_LATENT_RGB)
    rgb = torch.einsum("chw,cr->rhw", item, factors) + torch.tensor(FLUX_LATENT_RGB_BIAS)[:, None, None]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels, "RGB")
    scale = min(PREVIEW_MAX_SIDE / width, PREVIEW_MAX_SIDE / height, 1.0)
    image = image.resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return out.getvalue()
