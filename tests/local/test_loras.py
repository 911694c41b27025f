"""LoRAs on the local engine (issue 11): tiny LoRAs made in code against the tiny FLUX
models, served from loopback, applied per request without reloading the base model."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from openfal.backends.base import Output
from openfal.backends.local import LocalBackend
from openfal.backends.local.lora_files import hint_of
from openfal.config import Settings
from openfal.errors import InputFetchFailed, InputInvalid, InputRejected
from openfal.events import Log
from tests.local.helpers import TEST_OPTIONS, make_job, output_of, run_one
from tests.local.lora_makers import FileServer, kohya_lora, linear_shapes, peft_lora, transformer_of

LORA = "fal-ai/flux-lora"


@pytest.fixture(scope="module")
def shapes(models_dir: Path) -> dict[str, tuple[int, int]]:
    from openfal.backends.local.tiny import build_tiny_models

    build_tiny_models(models_dir, names=("flux-dev",))
    return linear_shapes(transformer_of(models_dir))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[FileServer]:
    folder = tmp_path / "served"
    folder.mkdir()
    server = FileServer(folder)
    server.folder = folder  # type: ignore[attr-defined]
    yield server
    server.close()


@pytest.fixture
async def lora_backend(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[LocalBackend]:
    installed = tmp_path / "installed"
    installed.mkdir()
    backend = LocalBackend(make_settings(loras_dir=installed, max_lora_bytes=1024 * 1024, lora_max_rank=16), options=TEST_OPTIONS)
    await backend.start()
    yield backend
    await backend.close()


def body(*loras: dict[str, Any], seed: int = 5) -> dict[str, Any]:
    return {
        "prompt": "a fox",
        "image_size": {"width": 64, "height": 48},
        "num_inference_steps": 2,
        "seed": seed,
        "output_format": "png",
        "loras": list(loras),
    }


def image(result: Any) -> np.ndarray:
    blob = output_of(result).payload["images"][0]
    return np.asarray(Image.open(io.BytesIO(blob.read())).convert("RGB"), dtype=np.int16)


def folder(server: FileServer) -> Path:
    return server.folder  # type: ignore[attr-defined,no-any-return]


async def test_a_lora_changes_the_image(lora_backend: LocalBackend, served: FileServer, shapes: dict) -> None:
    peft_lora(shapes, folder(served) / "style.safetensors")
    plain = image((await run_one(lora_backend, LORA, body()))[0])
    styled = image((await run_one(lora_backend, LORA, body({"path": served.url("style.safetensors")})))[0])
    assert np.abs(plain - styled).max() > 8


async def test_scale_zero_gives_the_same_image_as_no_lora(lora_backend: LocalBackend, served: FileServer, shapes: dict) -> None:
    peft_lora(shapes, folder(served) / "style.safetensors")
    plain = image((await run_one(lora_backend, LORA, body()))[0])
    zero = image((await run_one(lora_backend, LORA, body({"path": served.url("style.safetensors"), "scale": 0})))[0])
    assert np.array_equal(plain, zero)


async def test_a_request_without_loras_after_one_with_runs_on_the_base_model(
    lora_backend: LocalBackend, served: FileServer, shapes: dict
) -> None:
    """Adapters live on the shared transformer: the next plain request must not see them."""
    peft_lora(shapes, folder(served) / "style.safetensors")
    before = image((await run_one(lora_backend, "fal-ai/flux-1/dev", body()))[0])
    await run_one(lora_backend, LORA, body({"path": served.url("style.safetensors")}))
    after = image((await run_one(lora_backend, "fal-ai/flux-1/dev", body()))[0])
    assert np.array_equal(before, after)


async def test_two_loras_combine(lora_backend: LocalBackend, served: FileServer, shapes: dict) -> None:
    peft_lora(shapes, folder(served) / "a.safetensors", seed=1)
    peft_lora(shapes, folder(served) / "b.safetensors", seed=2)
    a = image((await run_one(lora_backend, LORA, body({"path": served.url("a.safetensors")})))[0])
    b = image((await run_one(lora_backend, LORA, body({"path": served.url("b.safetensors")})))[0])
    both = image((await run_one(lora_backend, LORA, body({"path": served.url("a.safetensors")}, {"path": served.url("b.safetensors"), "scale": 0.7})))[0])
    assert np.abs(both - a).max() > 8 and np.abs(both - b).max() > 8


async def test_a_kohya_lora_loads_and_changes_the_image(lora_backend: LocalBackend, served: FileServer, shapes: dict) -> None:
    kohya_lora(shapes, folder(served) / "kohya.safetensors")
    plain = image((await run_one(lora_backend, LORA, body()))[0])
    styled = image((await run_one(lora_backend, LORA, body({"path": served.url("kohya.safetensors")})))[0])
    assert np.abs(plain - styled).max() > 8


async def test_the_second_use_of_a_lora_url_is_a_cache_hit(lora_backend: LocalBackend, served: FileServer, shapes: dict) -> None:
    peft_lora(shapes, folder(served) / "style.safetensors")
    first = image((await run_one(lora_backend, LORA, body({"path": served.url("style.safetensors")})))[0])
    second = image((await run_one(lora_backend, LORA, body({"path": served.url("style.safetensors")})))[0])
    assert served.hits["/style.safetensors"] == 1
    assert np.array_equal(first, second)


async def test_the_logs_say_which_loras_were_applied(lora_backend: LocalBackend, served: FileServer, shapes: dict) -> None:
    peft_lora(shapes, folder(served) / "style.safetensors")
    _, recorder = await run_one(lora_backend, LORA, body({"path": served.url("style.safetensors"), "scale": 0.5}))
    messages = [event.message for event in recorder.of(Log)]
    assert any("LoRAs applied" in m and "style.safetensors (scale 0.5)" in m for m in messages), messages


async def test_an_installed_lora_is_found_by_name(lora_backend: LocalBackend, shapes: dict) -> None:
    assert lora_backend.settings.loras_dir is not None
    peft_lora(shapes, lora_backend.settings.loras_dir / "house-style.safetensors")
    plain = image((await run_one(lora_backend, LORA, body()))[0])
    styled = image((await run_one(lora_backend, LORA, body({"path": "house-style"})))[0])
    assert np.abs(plain - styled).max() > 8


@pytest.mark.parametrize("name", ["model.bin", "model.pt", "model.ckpt", "model.pth"])
def test_pickle_lora_files_are_refused_at_submit(lora_backend: LocalBackend, name: str) -> None:
    job, _ = make_job(LORA, body({"path": f"https://example.com/{name}"}))
    with pytest.raises(InputInvalid) as refused:
        lora_backend.admit(LORA, job.input)
    assert refused.value.detail[0]["loc"] == ["body", "loras", 0, "path"]


@pytest.mark.parametrize("name", ["model.bin", "model.pt", "model.ckpt", "model.pth"])
async def test_pickle_lora_files_are_refused_unread(lora_backend: LocalBackend, served: FileServer, name: str) -> None:
    (folder(served) / name).write_bytes(b"\x80\x04pickle")
    result, _ = await run_one(lora_backend, LORA, body({"path": served.url(name)}))
    assert isinstance(result, InputRejected) and result.status_code == 422
    assert "only .safetensors" in str(result)
    assert served.hits[f"/{name}"] == 0


async def test_a_pickle_named_safetensors_is_refused(lora_backend: LocalBackend, served: FileServer) -> None:
    import pickle

    (folder(served) / "evil.safetensors").write_bytes(pickle.dumps({"a": 1}))
    result, _ = await run_one(lora_backend, LORA, body({"path": served.url("evil.safetensors")}))
    assert isinstance(result, InputRejected) and "not a safetensors file" in str(result)


async def test_a_lora_for_another_model_is_refused(lora_backend: LocalBackend, served: FileServer, shapes: dict) -> None:
    """Right key names, wrong shapes (a LoRA made for a bigger FLUX, or another model)."""
    state = {}
    for name, (fan_in, fan_out) in shapes.items():
        if name.endswith("attn.to_q"):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(4, fan_in * 2)
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(fan_out * 2, 4)
    save_file(state, str(folder(served) / "wrong.safetensors"))
    result, _ = await run_one(lora_backend, LORA, body({"path": served.url("wrong.safetensors")}))
    assert isinstance(result, InputRejected) and "do not fit" in str(result)


async def test_a_file_with_no_flux_keys_is_refused(lora_backend: LocalBackend, served: FileServer) -> None:
    save_file({"model.layers.0.weight": torch.randn(4, 4)}, str(folder(served) / "other.safetensors"))
    result, _ = await run_one(lora_backend, LORA, body({"path": served.url("other.safetensors")}))
    assert isinstance(result, InputRejected) and result.status_code == 422


async def test_a_lora_above_the_served_rank_is_refused(lora_backend: LocalBackend, served: FileServer, shapes: dict) -> None:
    peft_lora(shapes, folder(served) / "big.safetensors", rank=32)
    result, _ = await run_one(lora_backend, LORA, body({"path": served.url("big.safetensors")}))
    assert isinstance(result, InputRejected) and "OPENFAL_LORA_MAX_RANK" in str(result)


async def test_a_lora_url_answering_404_is_a_clear_input_error(lora_backend: LocalBackend, served: FileServer) -> None:
    result, _ = await run_one(lora_backend, LORA, body({"path": served.url("missing.safetensors")}))
    assert isinstance(result, InputFetchFailed) and result.status_code == 422
    assert "HTTP 404" in str(result) and result.field == "loras.0.path"


async def test_a_lora_over_the_size_limit_is_refused(lora_backend: LocalBackend, served: FileServer) -> None:
    save_file({"transformer.x.lora_A.weight": torch.zeros(1024, 512)}, str(folder(served) / "huge.safetensors"))
    result, _ = await run_one(lora_backend, LORA, body({"path": served.url("huge.safetensors")}))
    assert isinstance(result, InputFetchFailed) and "larger than the limit" in str(result)


def test_only_requests_with_the_same_lora_set_share_a_batch(lora_backend: LocalBackend) -> None:
    one = make_job(LORA, body({"path": "a", "scale": 1.0}))[0].input
    same = make_job(LORA, body({"path": "a", "scale": 1.0}, seed=9))[0].input
    other_scale = make_job(LORA, body({"path": "a", "scale": 0.5}))[0].input
    none = make_job(LORA, body())[0].input
    key = lora_backend.batch_key
    assert key(LORA, one) == key(LORA, same)
    assert len({key(LORA, one), key(LORA, other_scale), key(LORA, none)}) == 3


async def test_a_batch_of_two_requests_with_one_lora_equals_their_single_runs(
    lora_backend: LocalBackend, served: FileServer, shapes: dict
) -> None:
    peft_lora(shapes, folder(served) / "style.safetensors")
    lora = {"path": served.url("style.safetensors")}
    jobs = [make_job(LORA, body(lora, seed=s), request_id=f"r{s}")[0] for s in (1, 2)]
    batched = await lora_backend.run(jobs)
    singles = [(await run_one(lora_backend, LORA, body(lora, seed=s)))[0] for s in (1, 2)]
    for a, b in zip(batched, singles, strict=True):
        assert isinstance(a, Output)
        assert int(np.abs(image(a) - image(b)).max()) <= 2


async def test_a_worker_with_a_lora_applied_advertises_it_and_its_model_as_runner_hints(
    lora_backend: LocalBackend, served: FileServer, shapes: dict
) -> None:
    """X-Fal-Runner-Hint: the engine's status names its loaded models and the LoRAs it
    applied lately, by the path the request named (no query string, which may hold a
    signature, nor fragment)."""
    peft_lora(shapes, folder(served) / "style.safetensors")
    output_of((await run_one(lora_backend, LORA, body({"path": served.url("style.safetensors") + "#v2"})))[0])
    hints = lora_backend.status()["runner_hints"]
    assert served.url("style.safetensors") in hints
    assert hint_of("https://cdn.test/a.safetensors?X-Amz-Signature=secret") == "https://cdn.test/a.safetensors"
    assert hint_of("data:application/octet-stream;base64,AAAA") is None
    assert set(hints) - {served.url("style.safetensors")} == {entry["model"] for entry in lora_backend.status()["loaded"]}
