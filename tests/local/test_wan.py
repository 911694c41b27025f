"""Wan 2.2 on the tiny set: fal's three Wan endpoints, their sizes, both A14B experts,
the decode reported per chunk, cancelling within one step, the frame caps, the MP4 in a
file encoded with the GPU lock free, and memory plans from the real configs.

TEST_OPTIONS' ``video_max_area`` (64x64) scales fal's frame sizes down for the CPU,
keeping their aspect and the model's multiple (32 on the 5B, 16 on the A14B)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import pytest

from openfal.backends.local import LocalBackend
from openfal.backends.local.families import videos, wan
from openfal.backends.local.memory_plan import GIB, component_sizes, plan_model
from openfal.endpoints.catalog import CATALOG
from openfal.errors import InputInvalid, ModelUnavailable, RunCancelled
from openfal.events import Log, Progress
from openfal.models import MediaBlob
from tests.local.helpers import TEST_OPTIONS, data_uri, make_job, output_of, run_one
from tests.local.test_endpoints import published

T2V_5B = "fal-ai/wan/v2.2-5b/text-to-video"
I2V_5B = "fal-ai/wan/v2.2-5b/image-to-video"
T2V_A14B = "fal-ai/wan/v2.2-a14b/text-to-video"


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a fox in the snow", "num_frames": 17, "num_inference_steps": 2, "seed": 3, **fields}


def frames_of(blob: MediaBlob) -> list[Any]:
    reader = imageio.get_reader(str(blob.data), "ffmpeg")
    try:
        return [frame for frame in reader]  # list() would ask len(), which is inf
    finally:
        reader.close()


# (endpoint, extra input, expected (width, height)): fal's size at 64x64's area
CASES: list[tuple[str, dict[str, Any], tuple[int, int]]] = [
    (T2V_5B, {}, (64, 32)),  # 720p 16:9 is 1280x704
    (T2V_5B, {"aspect_ratio": "9:16", "resolution": "580p"}, (32, 64)),
    (I2V_5B, {"image_url": data_uri(96, 96)}, (64, 64)),  # auto: the image's aspect
    (I2V_5B, {"image_url": data_uri(96, 96), "aspect_ratio": "16:9"}, (64, 32)),  # resized and centre-cropped
    (T2V_A14B, {}, (80, 48)),  # 720p 16:9 is 1280x720
    (T2V_A14B, {"resolution": "480p", "aspect_ratio": "1:1"}, (64, 64)),
]


@pytest.mark.parametrize(("endpoint", "extra", "size"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
async def test_wan_endpoints_return_fal_video_results(backend: LocalBackend, endpoint: str, extra: dict[str, Any], size: tuple[int, int]) -> None:
    """The result validates against fal's output schema (video File, seed, prompt); the
    MP4 has 17 frames of the expected size; usage counts seconds at fal's 16 fps."""
    output = output_of((await run_one(backend, endpoint, body(**extra)))[0])
    CATALOG[endpoint].output_model.model_validate(published(output.payload))
    assert set(output.payload) == {"video", "seed", "prompt"}
    assert output.payload["seed"] == 3 and output.payload["prompt"] == "a fox in the snow"
    video = output.payload["video"]
    assert video.content_type == "video/mp4" and video.file_name.endswith(".mp4")
    frames = frames_of(video)
    assert len(frames) == 17 and frames[0].shape[:2] == (size[1], size[0])
    assert output.usage.video_seconds == round(17 / 16, 3)


def test_wan_sizes_follow_fal_resolutions_and_aspect_ratios() -> None:
    """Without a scale-down: 720p is Wan's 1280x704 (5B) and 1280x720 (A14B); the 5B's
    auto aspect takes the image's at 720p's area, in multiples of 32."""
    family, options = wan.FAMILY, TEST_OPTIONS.__class__()
    assert family.shape(T2V_5B, {"num_frames": 81}, options) == videos.VideoShape(1280, 704, 81, 16)
    assert family.shape(T2V_A14B, {"resolution": "480p", "frames_per_second": 16}, options).width == 832
    portrait = family.shape(I2V_5B, {"aspect_ratio": "auto", "num_frames": 121, "frames_per_second": 24}, options, image_size=(600, 800))
    assert (portrait.width % 32, portrait.height % 32, portrait.frames, portrait.fps) == (0, 0, 121, 24)
    assert abs(portrait.width / portrait.height - 0.75) < 0.05 and abs(portrait.width * portrait.height - 1280 * 704) < 60_000
    assert [wan.frame_count(n) for n in (17, 80, 81, 82, 160, 161)] == [17, 81, 81, 81, 161, 161]


async def test_progress_counts_the_steps_then_each_decoded_chunk(backend: LocalBackend) -> None:
    """3 steps then 5 latent frames decoded (17 frames: 1 + 4 x 4) are 8 units of
    progress, in order, with a log line for each decoded chunk and the encoding."""
    _, recorder = await run_one(backend, T2V_5B, body(num_inference_steps=3))
    assert [(p.step, p.total) for p in recorder.of(Progress)] == [(i, 8) for i in range(1, 9)]
    messages = [log.message for log in recorder.of(Log)]
    assert [m for m in messages if m.startswith("step ")] == ["step 1/3", "step 2/3", "step 3/3"]
    decoded = [m for m in messages if m.startswith("decoded ")]
    assert decoded == ["decoded frames 1-1 of 17", "decoded frames 2-5 of 17", "decoded frames 6-9 of 17",
                       "decoded frames 10-13 of 17", "decoded frames 14-17 of 17"]  # fmt: skip
    assert any(m.startswith("encoded 17 frames to H.264 MP4") for m in messages)


async def test_the_a14b_runs_its_high_noise_expert_then_its_low_noise_one(backend: LocalBackend) -> None:
    """``transformer`` denoises the steps above the 0.875 boundary, ``transformer_2`` the
    rest (seen with forward hooks on the loaded experts); guidance_scale_2 reaches them."""
    output_of((await run_one(backend, T2V_A14B, body(num_inference_steps=1)))[0])  # load the pipeline
    (spec,) = [s for s in backend.engine().cache.loaded() if s.model == wan.T2V_A14B]
    (pipe,) = backend.engine().cache.get(spec)
    calls: list[str] = []
    hooks = [pipe.transformer.register_forward_hook(lambda *a: calls.append("high")),
             pipe.transformer_2.register_forward_hook(lambda *a: calls.append("low"))]  # fmt: skip
    try:
        first = output_of((await run_one(backend, T2V_A14B, body(num_inference_steps=6)))[0])
    finally:
        for hook in hooks:
            hook.remove()
    assert "high" in calls and "low" in calls and calls == sorted(calls)  # every "high" before every "low"
    assert len(calls) == 12  # 6 steps, each with and without the prompt (guidance)
    other = output_of((await run_one(backend, T2V_A14B, body(num_inference_steps=6, guidance_scale_2=9.0)))[0])
    assert first.payload["video"].read() != other.payload["video"].read()


async def test_seeds_and_shift_decide_the_video(backend: LocalBackend) -> None:
    """The same input gives the same MP4 bytes; another seed or another shift does not."""

    async def video(**fields: Any) -> bytes:
        return output_of((await run_one(backend, T2V_5B, body(**fields)))[0]).payload["video"].read()

    first = await video()
    assert await video() == first
    assert await video(seed=4) != first
    assert await video(shift=2.0) != first


async def test_fields_the_server_cannot_honour_are_named_in_the_logs(backend: LocalBackend) -> None:
    """The A14B's defaults ask for FILM interpolation and 'regular' acceleration: both are
    logged as not applied, as are prompt expansion and the safety checkers when asked."""
    _, recorder = await run_one(backend, T2V_A14B, body(enable_prompt_expansion=True, enable_safety_checker=True, num_frames=18))
    warnings = [log.message for log in recorder.of(Log) if log.level == "WARN"]
    assert any("frame interpolation (film, 1 between each pair) is not installed" in w for w in warnings)
    assert any(w.startswith("acceleration 'regular'") and "not applied" in w for w in warnings)
    assert any(w.startswith("enable_prompt_expansion") and "not applied" in w for w in warnings)
    assert any(w.startswith("enable_safety_checker") and "not applied" in w for w in warnings)
    assert "num_frames 18 is made as 17 (Wan makes 4k+1 frames)" in warnings
    _, quiet = await run_one(backend, T2V_5B, body(interpolator_model="none"))
    assert [log for log in quiet.of(Log) if log.level == "WARN"] == []


async def test_video_quality_sets_the_encoder_crf(backend: LocalBackend) -> None:
    """video_quality is applied: 'maximum' (CRF 12) makes a larger file than 'low' (CRF 28)."""
    low = output_of((await run_one(backend, T2V_5B, body(video_quality="low")))[0]).payload["video"]
    high = output_of((await run_one(backend, T2V_5B, body(video_quality="maximum")))[0]).payload["video"]
    assert high.size > low.size


async def test_cancel_mid_run_stops_within_one_step_without_decoding(backend: LocalBackend) -> None:
    """Cancelled at step 1 of 6: RunCancelled, no step 2, the VAE decoder never runs."""
    output_of((await run_one(backend, T2V_5B, body(num_inference_steps=1)))[0])
    (spec,) = [s for s in backend.engine().cache.loaded() if s.model == wan.TI2V_5B and s.class_name == "WanPipeline"]
    (pipe,) = backend.engine().cache.get(spec)
    decodes: list[int] = []
    hook = pipe.vae.decoder.register_forward_hook(lambda *a: decodes.append(1))
    try:
        job, recorder = make_job(T2V_5B, body(num_inference_steps=6))
        recorder.on_event = lambda event: job.cancel() if isinstance(event, Progress) and event.step == 1 else None
        (result,) = await backend.run([job])
    finally:
        hook.remove()
    assert isinstance(result, RunCancelled)
    assert [p.step for p in recorder.of(Progress)] == [1] and decodes == []


async def test_cancel_during_the_decode_stops_at_the_next_chunk(backend: LocalBackend) -> None:
    """Cancelled once the first chunk is decoded (step 2 + chunk 1): the decode stops there."""
    job, recorder = make_job(T2V_5B, body())
    recorder.on_event = lambda event: job.cancel() if isinstance(event, Progress) and event.step == 3 else None
    (result,) = await backend.run([job])
    assert isinstance(result, RunCancelled)
    assert [p.step for p in recorder.of(Progress)] == [1, 2, 3]


async def test_the_mp4_is_a_file_encoded_with_the_gpu_lock_free(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder (the real one, watched) runs after the engine released its lock, and
    the result's video is a file under the data folder (published by streaming it)."""
    held: list[bool] = []
    encode = videos.encode_mp4

    def watched(*args: Any, **kwargs: Any) -> Path:
        held.append(backend.engine().lock.locked())
        return encode(*args, **kwargs)

    monkeypatch.setattr(videos, "encode_mp4", watched)
    output = output_of((await run_one(backend, T2V_5B, body()))[0])
    video = output.payload["video"]
    assert held == [False]
    assert isinstance(video.data, Path) and video.data.parent == backend.settings.data_dir.resolve() / "tmp" / "video"
    assert video.data.read_bytes()[4:8] == b"ftyp"


def test_a_cancel_while_encoding_leaves_no_file(tmp_path: Path) -> None:
    """encode_mp4 checks for a cancel before each frame and removes its partial file."""
    import numpy as np

    frames = np.zeros((9, 32, 32, 3), dtype=np.uint8)
    seen = []

    def cancelled() -> bool:
        seen.append(1)
        return len(seen) > 3

    with pytest.raises(RunCancelled):
        videos.encode_mp4(frames, 16, tmp_path, cancelled=cancelled)
    assert list(tmp_path.iterdir()) == []


def test_frames_times_pixels_past_the_cap_are_refused_at_submit(make_settings: Any) -> None:
    """admit: 161 frames at 720p are past a cap of 720p x 81 frames; 81 are not; a
    frame past OPENFAL_MAX_OUTPUT_PIXELS is refused whatever the length."""
    local = LocalBackend(make_settings(max_video_pixels=1280 * 720 * 81, max_output_pixels=1280 * 720), options=TEST_OPTIONS.__class__())
    local.admit(T2V_A14B, {"prompt": "x", "num_frames": 81, "resolution": "720p", "aspect_ratio": "16:9"})
    with pytest.raises(InputInvalid) as caught:
        local.admit(T2V_A14B, {"prompt": "x", "num_frames": 161, "resolution": "720p", "aspect_ratio": "16:9"})
    (detail,) = caught.value.detail
    assert detail["loc"] == ["body", "num_frames"] and detail["type"] == "output_too_large" and "OPENFAL_MAX_VIDEO_PIXELS" in detail["msg"]
    small = LocalBackend(make_settings(max_output_pixels=832 * 480), options=TEST_OPTIONS.__class__())
    with pytest.raises(InputInvalid) as caught:
        small.admit(T2V_5B, {"prompt": "x", "num_frames": 17, "resolution": "720p"})
    assert caught.value.detail[0]["loc"] == ["body", "resolution"]


async def test_a_missing_wan_model_names_the_download_command(make_settings: Any, tmp_path: Path) -> None:
    """Outside demo mode with nothing installed: 503 naming `openfal models download`."""
    local = LocalBackend(make_settings(demo=False, models_dir=tmp_path / "empty"), options=TEST_OPTIONS)
    for endpoint, model in ((T2V_5B, "wan2.2-ti2v-5b"), (T2V_A14B, "wan2.2-t2v-a14b")):
        result, _ = await run_one(local, endpoint, body())
        assert isinstance(result, ModelUnavailable) and result.status_code == 503
        assert f"openfal models download {model}" in result.message
    await local.close()


async def test_image_to_video_shares_the_5b_modules_and_keeps_its_timestep_mode(backend: LocalBackend) -> None:
    """The image-to-video pipeline is built from the loaded text-to-video one's modules,
    keeping TI2V-5B's expand_timesteps (the first frame's latent is the image's)."""
    output_of((await run_one(backend, T2V_5B, body(num_inference_steps=1)))[0])
    output_of((await run_one(backend, I2V_5B, body(num_inference_steps=1, image_url=data_uri(64, 64))))[0])
    pipes = {s.class_name: backend.engine().cache.get(s)[0] for s in backend.engine().cache.loaded() if s.model == wan.TI2V_5B}
    t2v, i2v = pipes["WanPipeline"], pipes["WanImageToVideoPipeline"]
    assert i2v.transformer is t2v.transformer and i2v.vae is t2v.vae
    assert i2v.config.expand_timesteps is True and t2v.config.expand_timesteps is True


# -- the real models: sizes and memory plans ------------------------------------------------------


def test_sizes_come_from_the_real_wan_configs() -> None:
    """5.0B (TI2V-5B), 2 x 14.3B (A14B experts), the 5.7B UMT5-XXL encoder, the Wan 2.2
    VAE (705M) and the Wan 2.1 VAE (127M), counted on the meta device."""
    five, a14b = component_sizes(wan.TI2V_5B), component_sizes(wan.T2V_A14B)
    assert round(five["transformer"].bf16 / 2 / 1e9, 1) == 5.0
    assert round(a14b["transformer"].bf16 / 2 / 1e9, 1) == round(a14b["transformer_2"].bf16 / 2 / 1e9, 1) == 14.3
    assert round(five["text_encoder"].bf16 / 2 / 1e9, 2) == 5.68
    assert round(five["vae"].bf16 / 2 / 1e6) == 705 and round(a14b["vae"].bf16 / 2 / 1e6) == 127


def test_ti2v_5b_fits_a_24_gib_card() -> None:
    plan = plan_model(wan.TI2V_5B, 24 * GIB)
    assert plan.fits and plan.resident_gib <= 24 and plan.transformer_dtype == "bfloat16"


def test_a14b_fits_80_gib_with_both_experts_and_the_720p_decode_counted() -> None:
    """Both experts are resident (the switch at the boundary moves nothing), and the
    activations counted cover the VAE decode of 81 frames at 1280x720."""
    plan = plan_model(wan.T2V_A14B, 80 * GIB)
    assert plan.fits and plan.offload == "none" and plan.resident_gib <= 80
    assert plan.where["transformer"] == plan.where["transformer_2"] == "gpu bfloat16"
    decode = wan._vae_decode(2 * 96, 1)(1280, 720, 81)
    assert plan.activations_gib * GIB >= decode and decode > 5 * GIB
    assert plan.weights_gib > 2 * 26.5  # two 14.3B experts in bf16
    assert plan_model(wan.T2V_A14B, 48 * GIB).offload != "none"  # 64 GiB of weights cannot all stay


# -- catalog, prices, OpenAPI ---------------------------------------------------------------------


async def test_wan_endpoints_are_listed_with_licence_price_and_fal_openapi(make_settings: Any) -> None:
    """/api/endpoints lists the three Wan endpoints as Apache-2.0 video endpoints of the
    wan family; the A14B has fal's list price; each OpenAPI document carries fal's fields
    and defaults and the licence."""
    from openfal.accounting import DEFAULT_PRICES
    from openfal.backends.builtin import BuiltinBackend
    from tests.support import running_app

    settings = make_settings()
    async with running_app(settings, {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}) as app:
        listed = {e["endpoint_id"]: e for e in (await app.client.get("/api/endpoints")).json()}
        for endpoint in (T2V_5B, I2V_5B, T2V_A14B):
            entry = listed[endpoint]
            assert (entry["kind"], entry["family"], entry["backend"]) == ("video", "wan", "local")
            assert entry["licence"]["name"] == "apache-2.0" and entry["licence"]["commercial"] is True
        doc = (await app.client.get("/openapi/queue/openapi.json", params={"endpoint_id": T2V_A14B})).json()
    assert doc["info"]["license"]["name"] == "apache-2.0" and f"/{T2V_A14B}" in doc["paths"]
    fields = doc["components"]["schemas"]["WanA14bTextToVideoInput"]["properties"]
    assert (fields["guidance_scale_2"]["default"], fields["frames_per_second"]["default"], fields["num_inference_steps"]["default"]) == (4, 16, 27)
    assert (fields["num_frames"]["minimum"], fields["num_frames"]["maximum"], fields["acceleration"]["default"]) == (17, 161, "regular")
    assert DEFAULT_PRICES[T2V_A14B].per_video_second == 0.08


async def test_the_24_gib_placement_gives_the_resident_video(make_settings: Any) -> None:
    """Planned for a 24 GiB card, the 5B's UMT5 encoder waits in host memory and visits
    the device to encode (its inputs brought along); the video is the resident one's.
    On CPU the "device" is the CPU: this shows the hooks run and change nothing."""
    resident = LocalBackend(make_settings(), options=TEST_OPTIONS)
    planned = LocalBackend(make_settings(), options=TEST_OPTIONS)
    planned.engine().memory_bytes = 24 * GIB
    try:
        expected = output_of((await run_one(resident, T2V_5B, body()))[0]).payload["video"].read()
        got = output_of((await run_one(planned, T2V_5B, body()))[0]).payload["video"].read()
        assert planned.engine().plans[wan.TI2V_5B].offload == "text_encoders"
        assert got == expected
    finally:
        await resident.close()
        await planned.close()


async def test_the_run_time_limit_stops_a_video_between_decoded_chunks(make_settings: Any) -> None:
    """A decode that outlasts OPENFAL_MAX_RUN_SECONDS (each chunk held 0.8 s by a hook on
    the real decoder) ends 504 request_timeout at a chunk boundary, before its last chunk."""
    import threading
    import time

    from diffusers.models.autoencoders.autoencoder_kl_wan import WanDecoder3d

    from openfal.backends.builtin import BuiltinBackend
    from tests.support import running_app, wait_status

    def slow(module: Any, args: Any) -> None:
        if isinstance(module, WanDecoder3d) and threading.current_thread() is not threading.main_thread():
            time.sleep(0.8)

    import torch

    settings = make_settings(poll_interval_seconds=0.05, heartbeat_seconds=0.5, max_run_seconds=2.0)
    async with running_app(settings, {"builtin": BuiltinBackend(), "local": LocalBackend(settings, options=TEST_OPTIONS)}) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        warm = (await app.client.post(f"/{T2V_5B}", json=body(num_inference_steps=1), headers=auth)).json()  # loads the model
        assert (await wait_status(app.client, warm["status_url"], auth, timeout=60)).json()["status"] == "COMPLETED"
        handle = torch.nn.modules.module.register_module_forward_pre_hook(slow)
        try:
            urls = (await app.client.post(f"/{T2V_5B}", json=body(num_frames=33), headers=auth)).json()
            done = await wait_status(app.client, urls["status_url"] + "?logs=1", auth, timeout=60)
        finally:
            handle.remove()
    assert done.json()["error_type"] == "request_timeout", done.text
    messages = [entry["message"] for entry in done.json()["logs"]]
    assert "decoded frames 1-1 of 33" in messages and "decoded frames 30-33 of 33" not in messages
