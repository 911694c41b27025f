"""Tiny LoRAs made in code against the tiny FLUX transformer, in the layouts people
publish: diffusers/PEFT (``transformer.<module>.lora_A.weight``) and kohya
(``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` with an ``alpha``), plus a
file served over loopback HTTP that counts its downloads."""

from __future__ import annotations

import http.server
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def transformer_of(models_dir: Path, model: str = "flux-dev") -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    from openfal.backends.local.tiny import tiny_dir

    return FluxTransformer2DModel.from_pretrained(str(tiny_dir(models_dir) / model / "transformer"))


def linear_shapes(transformer: torch.nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (m.in_features, m.out_features) for name, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}


def peft_lora(
    shapes: dict[str, tuple[int, int]], path: Path, *, rank: int = 4, magnitude: float = 3.0, seed: int = 0, targets: tuple[str, ...] = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0")
) -> Path:
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, (fan_in, fan_out) in shapes.items():
        if name.endswith(targets):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) * magnitude
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * magnitude
    save_file(state, str(path))
    return path


def kohya_lora(shapes: dict[str, tuple[int, int]], path: Path, *, rank: int = 4, magnitude: float = 3.0, seed: int = 1) -> Path:
    """The double blocks' image QKV in kohya's (sd-scripts) FLUX layout: one fused
    down/up pair per block with its alpha; diffusers splits it into to_q/to_k/to_v."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    blocks = sorted({name.split(".")[1] for name in shapes if name.startswith("transformer_blocks.")})
    for block in blocks:
        fan_in, fan_out = shapes[f"transformer_blocks.{block}.attn.to_q"]
        key = f"lora_unet_double_blocks_{block}_img_attn_qkv"
        state[f"{key}.lora_down.weight"] = torch.randn(rank, fan_in, generator=generator) * magnitude
        state[f"{key}.lora_up.weight"] = torch.randn(3 * fan_out, rank, generator=generator) * magnitude
        state[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path))
    return path


class FileServer:
    """A real HTTP server on loopback serving a folder, counting GETs per path."""

    def __init__(self, folder: Path) -> None:
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.hits[self.path] += 1
                file = folder / self.path.lstrip("/")
                if not file.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
