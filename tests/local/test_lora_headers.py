"""A LoRA's safetensors header is user data: bounded in size before it is parsed (N1:
an 89 MB header of valid JSON froze the server 15-27 s on every use), in nesting while
it is (N7: 100,000 levels ended the request 500 with a RecursionError), each a 422
naming the LoRA; and a file is parsed once, not on every request that names it.
Installed LoRAs (``OPENFAL_LORAS_DIR``) stand in for downloads: the check is the same."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import httpx
import pytest

from openfal.backends.local import lora_files
from openfal.backends.local.lora_files import MAX_HEADER_BYTES, LoraFiles
from openfal.config import Settings
from openfal.errors import InputRejected


def write_safetensors(path: Path, header: bytes, data: bytes = b"\0" * 8) -> Path:
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def a_tensor(name: str = "transformer.x.lora_A.weight") -> dict:
    return {name: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.fixture
def files(tmp_path: Path) -> LoraFiles:
    (tmp_path / "loras").mkdir()
    return LoraFiles(Settings(data_dir=tmp_path / "data", loras_dir=tmp_path / "loras"))


async def resolve(files: LoraFiles, name: str) -> list[lora_files.LoraFile]:
    async with httpx.AsyncClient() as client:
        return await files.resolve([(name, 1.0)], client)


async def test_a_header_past_the_bound_is_a_422_before_it_is_parsed(files: LoraFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    header = {**a_tensor(), "__metadata__": {"pad": "x" * MAX_HEADER_BYTES}}
    write_safetensors(files.installed / "big.safetensors", json.dumps(header).encode())
    parsed = []
    monkeypatch.setattr(lora_files.json, "loads", lambda raw: parsed.append(raw) or json.JSONDecoder().decode(raw.decode()))
    with pytest.raises(InputRejected) as refused:
        await resolve(files, "big")
    assert refused.value.detail[0]["loc"] == ["body", "loras", 0, "path"]
    assert f"more than {MAX_HEADER_BYTES} bytes" in refused.value.detail[0]["msg"]
    assert parsed == []


async def test_a_header_nested_100000_deep_is_a_422_not_a_500(files: LoraFiles) -> None:
    write_safetensors(files.installed / "deep.safetensors", b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(InputRejected) as refused:
        await resolve(files, "deep")
    assert "nested too deep" in refused.value.detail[0]["msg"]


async def test_a_lora_is_parsed_once_however_often_it_is_used(files: LoraFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    write_safetensors(files.installed / "ok.safetensors", json.dumps(a_tensor()).encode())
    parses = []
    real = json.loads
    monkeypatch.setattr(lora_files.json, "loads", lambda raw: parses.append(1) or real(raw))
    first = await resolve(files, "ok")
    second = await resolve(files, "ok")
    assert first == second and len(parses) == 1
