"""Whether two saved components hold the same weights, so they are loaded once.

FLUX.1 [dev], [schnell], Kontext [dev] ship the same CLIP-L, T5-XXL (~9.5 GB in bf16)
and VAE files. Loading each model separately would keep three copies on the GPU; the
model cache instead reuses an already-loaded module whenever a component folder holds
byte-identical weights. Identity is decided cheaply first (class, config, file names
and sizes) and exactly only when that matches for two different folders:

* files in the Hugging Face cache are symlinks to ``blobs/<sha256>``: the name is the hash;
* files fetched by ``snapshot_download(local_dir=...)`` have the hash (etag) in
  ``.cache/huggingface/download/<file>.metadata``, trusted while the file is not newer;
* anything else is hashed once per process (seconds per GB).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ComponentId:
    """A component folder's identity: ``cheap`` compares configs and file sizes; ``exact``
    (computed on demand) the weights' content."""

    folder: Path
    cheap: str

    def same_weights(self, other: ComponentId) -> bool:
        if self.cheap != other.cheap:
            return False
        if self.folder == other.folder:
            return True
        return exact_id(self.folder) == exact_id(other.folder)


def component_id(folder: Path, class_name: str) -> ComponentId | None:
    """The identity of a component folder holding weights (None for tokenizers,
    schedulers and processors, which are cheap and never shared across models)."""
    weights = _weight_files(folder)
    if not weights:
        return None
    digest = hashlib.sha256(class_name.encode())
    config = folder / "config.json"
    if config.is_file():
        digest.update(json.dumps(_config_without_meta(config), sort_keys=True).encode())
    for file in weights:
        digest.update(f"{file.name}:{file.stat().st_size};".encode())
    return ComponentId(folder.resolve(), digest.hexdigest())


def exact_id(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in _weight_files(folder):
        digest.update(f"{file.name}:{content_hash(file)};".encode())
    return digest.hexdigest()


def content_hash(file: Path) -> str:
    """The sha256 of a weight file, from the HF cache layout when it is known."""
    target = file.resolve()
    if target.parent.name == "blobs" and _SHA256.match(target.name):
        return target.name
    recorded = _local_dir_etag(file)
    if recorded is not None:
        return recorded
    stat = target.stat()
    key = (str(target), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key not in _hash_cache:
            digest = hashlib.sha256()
            with target.open("rb") as handle:
                while chunk := handle.read(16 * 1024 * 1024):
                    digest.update(chunk)
            _hash_cache[key] = digest.hexdigest()
        return _hash_cache[key]


def _local_dir_etag(file: Path) -> str | None:
    """The sha256 huggingface_hub recorded when it downloaded ``file`` into a local dir."""
    for root in file.parents:
        metadata = root / ".cache" / "huggingface" / "download" / file.relative_to(root)
        metadata = metadata.with_name(metadata.name + ".metadata")
        if metadata.is_file():
            lines = metadata.read_text().splitlines()
            if len(lines) >= 3 and _SHA256.match(lines[1]) and file.stat().st_mtime <= float(lines[2]) + 1:
                return lines[1]
            return None
    return None


def _weight_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and p.is_file())


def _config_without_meta(config: Path) -> dict[str, object]:
    data = json.loads(config.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype")}
