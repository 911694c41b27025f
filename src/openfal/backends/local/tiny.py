"""The tiny random-weight model set: every model the local backend serves, shrunk to a
few hundred kilobytes, built in code with no download (tokenizers included). Each
family builds its own models (``Model.build_tiny``); this module holds what they share
(tokenizers made in code, CLIP and T5 stand-ins) and writes the folders.

Why it exists: tests and ``openfal serve --demo`` need the real diffusers pipelines end
to end without FLUX's 30 GB of weights and without network access. Each model is
saved as a diffusers-layout folder and loaded back through the same
``from_pretrained(dir, local_files_only=True)`` path as real weights, so the loading
code is exercised too. The images are noise; the shapes are real:

* the VAE has 4 levels (scale 8) and 16 latent channels, so the transformer sees
  ``in_channels=64`` and ``(H/16)*(W/16)`` image tokens exactly as FLUX.1 does, and
  the latent->RGB preview projection applies unchanged;
* FLUX.1 [dev] and Kontext have ``guidance_embeds=True``, [schnell] has not;
* dev, schnell, Kontext and the Redux prior are saved with the *same* text encoders
  and VAE weights, as the real repositories ship the same files, so component sharing
  between them is exercised.

Every module is put in ``.eval()`` before saving: modules built directly start in train
mode, and T5's dropout then makes identical calls differ.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

#: the text-embedding widths of the tiny set (T5 d_model, CLIP hidden size)
T5_DIM = 32
CLIP_DIM = 32


def tiny_dir(models_dir: Path) -> Path:
    """Where the tiny set lives under a models folder."""
    return models_dir / "tiny"


def is_built(folder: Path) -> bool:
    """A model folder is complete once its index (pipelines) or config (checker) exists;
    both are written last, by an atomic rename of the whole folder."""
    return (folder / "model_index.json").is_file() or (folder / "config.json").is_file()


def build_tiny_models(models_dir: Path, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Build (once) the tiny folders for ``names`` under ``{models_dir}/tiny``.

    Idempotent and safe against concurrent builders (a server and a worker process
    starting together): each folder is written to a temporary sibling and renamed into
    place; whoever renames second discards its copy.
    """
    root = tiny_dir(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    builders = _builders()
    folders: dict[str, Path] = {}
    for name in names if names is not None else tuple(builders):
        target = root / name
        if not is_built(target):
            _build_atomically(builders[name], target)
        folders[name] = target
    return folders


def _build_atomically(builder: Callable[[Path], None], target: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            builder(scratch)
        try:
            os.rename(scratch, target)
        except OSError:  # another process finished first (or a stale empty folder)
            if not is_built(target):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- tokenizers, made in code -----------------------------------------------------------


def clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every byte is a token.

    ``model_max_length=77`` matters: FLUX pads CLIP input to the tokenizer's maximum.
    """
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in bytes_to_unicode().values():
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> T5TokenizerFast:
    """A character-level Unigram T5 tokenizer (pad=0, eos=1, unk=2)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.printable if not c.isspace()]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_letters + string.digits]
    return T5TokenizerFast(vocab=pieces, extra_ids=0)


#: Qwen's special tokens, in Qwen2.5/Qwen3's order after the byte vocabulary
QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<think>", "</think>")
#: Qwen3's chat template, reduced to what the pipelines use: user turns, the assistant
#: prompt, and ``enable_thinking=False``'s empty thinking block
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% else %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def qwen_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges (every byte is a token) and Qwen's
    special tokens and chat template: what Qwen2.5-VL and Qwen3 text encoders (FLUX.2
    [klein], Z-Image, Qwen-Image) are fed with. 264 ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    for token in QWEN_SPECIAL:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
        additional_special_tokens=list(QWEN_SPECIAL[1:]), model_max_length=32768,
    )  # fmt: skip
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def qwen3_encoder(*, hidden_size: int = 16, layers: int = 28, seed: int = 3) -> Any:
    """A tiny Qwen3 causal LM as a text encoder. 28 layers as the real Qwen3-4B/8B's
    hidden-state taps go that deep (FLUX.2 [klein] reads layers 9, 18 and 27), 16 wide."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = Qwen3Config(
            vocab_size=len(bytes_to_unicode()) + len(QWEN_SPECIAL), hidden_size=hidden_size, intermediate_size=32,
            num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
            tie_word_embeddings=True, pad_token_id=256, eos_token_id=258,
        )  # fmt: skip
        return Qwen3ForCausalLM(config).eval()


# -- shared components ------------------------------------------------------------------


def text_components() -> dict[str, Any]:
    """CLIP-L and T5-XXL stand-ins; built under a fixed seed so every pipeline that
    includes them saves byte-identical weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        clip = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=CLIP_DIM,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                vocab_size=514,
                max_position_embeddings=77,
                projection_dim=CLIP_DIM,
                hidden_act="gelu",
            )
        ).eval()
        t5 = T5EncoderModel(t5_config()).eval()
    return {"text_encoder": clip, "tokenizer": clip_tokenizer(), "text_encoder_2": t5, "tokenizer_2": t5_tokenizer()}


def t5_config() -> T5Config:
    return T5Config(
        vocab_size=256,
        d_model=T5_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def build_safety_checker(folder: Path) -> None:
    """diffusers' StableDiffusionSafetyChecker at CLIP-tiny size, in the CompVis layout
    (config.json + weights + preprocessor_config.json in one folder).

    Its concept embeddings start as all-ones, so random weights flag nothing: the
    tiny checker exercises the checking path without blacking out demo images.
    """
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    StableDiffusionSafetyChecker(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def _builders() -> dict[str, Callable[[Path], None]]:
    """Every model's tiny builder: the families' models, and the safety checker."""
    from openfal.backends.local.registry import MODELS

    return {name: m.build_tiny for name, m in MODELS.items()}


def tiny_models() -> tuple[str, ...]:
    """The names the model registry knows, in build order."""
    return tuple(_builders())
