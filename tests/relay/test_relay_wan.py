"""Wan 2.2 endpoints through a relay route: fal's schema is checked before anything goes
upstream, the input goes up with fal's defaults, and the video comes back as an openfal file.

The upstream is the scripted FakeUpstream (conftest.py), not a real ``openfal serve
--demo``: the demo's tiny Wan makes fal's real frame sizes, and its VAE decode of even
17 frames at 480p takes over a minute on a CI CPU. The relay path under test is the same."""

from __future__ import annotations

import json
from pathlib import Path

from openfal.endpoints.wan import WanOutput
from tests.relay.conftest import FakeUpstream, relay_app, run_relayed

A14B = "/fal-ai/wan/v2.2-a14b/text-to-video"


def up(fake: FakeUpstream) -> dict[str, object]:
    return {"base_url": fake.url, "keys": ["k1:s1"]}


async def test_a_wan_request_is_validated_relayed_and_its_video_rehosted(tmp_path: Path, fake: FakeUpstream) -> None:
    """num_frames past fal's 161 is a 422 with nothing sent; a valid request goes up
    with fal's defaults filled in; the result keeps fal's Wan shape with the video copied into openfal."""
    video = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 500
    fake.files = {"/media/out.mp4": (video, "video/mp4")}
    fake.result = {
        "video": {"url": f"{fake.url}/media/out.mp4", "content_type": "video/mp4", "file_name": "out.mp4", "file_size": len(video)},
        "seed": 7,
        "prompt": "a fox",
    }
    async with relay_app(tmp_path, up(fake), routes={"fal-ai/wan/*": "up"}) as app:
        refused = await app.client.post(A14B, json={"prompt": "a fox", "num_frames": 200}, headers={"Authorization": f"Key {await app.key()}"})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "num_frames"]
        assert fake.submits == []
        done = await run_relayed(app, A14B, {"prompt": "a fox", "guidance_scale_2": 3})
        body = done.result.json()
        WanOutput.model_validate(body)
        assert (body["seed"], body["prompt"]) == (7, "a fox") and body["video"]["url"].startswith("http://openfal.test/files/")
        assert (await app.client.get(body["video"]["url"])).content == video
    (sent,) = fake.submits
    sent_input = json.loads(sent.body)
    assert sent.path == A14B and (sent_input["prompt"], sent_input["guidance_scale_2"]) == ("a fox", 3)
    assert (sent_input["num_frames"], sent_input["frames_per_second"], sent_input["resolution"]) == (81, 16, "720p")  # fal's defaults
