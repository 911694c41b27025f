"""The relay against a misbehaving upstream: a scriptable fal-shaped queue on loopback.

Every request must end COMPLETED, with its result or a clear error in fal's
vocabulary; nothing is lost and nothing is submitted upstream twice."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path

from PIL import Image

from tests.relay.conftest import FakeUpstream, finish, relay_app, run_relayed, submit, wait_for
from tests.support import free_port

ACME = "/acme/model"


def png(width: int = 8, height: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def up(fake: FakeUpstream, **extra: object) -> dict[str, object]:
    return {"base_url": fake.url, "keys": ["k1:s1"], **extra}


async def test_relays_input_unchanged_and_mirrors_logs_once(tmp_path: Path, fake: FakeUpstream) -> None:
    """The input reaches the upstream byte for byte as JSON; each upstream log line arrives once."""
    async with relay_app(tmp_path, up(fake)) as app:
        done = await run_relayed(app, ACME, {"prompt": "x", "extra": [1, {"a": None}]})
        assert done.result.status_code == 200 and done.result.json() == {"ok": True}
        assert await done.logs() == ["line 1", "line 2", "line 3"]
        assert done.status["request_id"] == done.id and fake.url not in json.dumps(done.status)
    submit_call = fake.submits[0]
    assert json.loads(submit_call.body) == {"prompt": "x", "extra": [1, {"a": None}]}
    assert submit_call.headers["authorization"] == "Key k1:s1"
    assert submit_call.headers["content-type"] == "application/json"
    assert fake.accepted == 1
    assert all(c.query.get("logs") == ["1"] for c in fake.of("GET", "/status"))


async def test_priority_and_no_retry_are_passed_upstream(tmp_path: Path, fake: FakeUpstream) -> None:
    """A low-priority X-Fal-No-Retry request is submitted upstream with both headers."""
    async with relay_app(tmp_path, up(fake)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        headers = {**auth, "X-Fal-Queue-Priority": "low", "X-Fal-No-Retry": "1"}
        submitted = (await app.client.post(ACME, json={"prompt": "x"}, headers=headers)).json()
        await finish(app, auth, submitted)
    assert fake.submits[0].headers["x-fal-queue-priority"] == "low"
    assert fake.submits[0].headers["x-fal-no-retry"] == "1"


async def test_submits_carry_the_request_id_as_idempotency_key(tmp_path: Path, fake: FakeUpstream) -> None:
    """Every upstream submit of a request (failovers and resubmits included) carries the
    same Idempotency-Key, its openfal request id, so an upstream openfal never runs it twice."""
    fake.submit_replies = [(429, {"detail": "slow down"})]
    async with relay_app(tmp_path, up(fake, keys=["k1:s1", "k2:s2"])) as app:
        done = await run_relayed(app, ACME, {"prompt": "x"})
    assert [c.headers["idempotency-key"] for c in fake.submits] == [done.id, done.id]


async def test_upstream_queue_position_is_mirrored(tmp_path: Path, fake: FakeUpstream) -> None:
    """While the upstream queues the request, openfal's status says IN_QUEUE with the upstream's position."""
    fake.status_replies = [(202, {"status": "IN_QUEUE", "queue_position": 7})] * 15
    async with relay_app(tmp_path, up(fake)) as app:
        auth, submitted = await submit(app, ACME, {})

        async def queued_upstream() -> bool:
            body = (await app.client.get(submitted["status_url"], headers=auth)).json()
            return body["status"] == "IN_QUEUE" and body["queue_position"] == 7

        await wait_for(queued_upstream)
        done = await finish(app, auth, submitted)
        assert done.result.json() == {"ok": True}


async def test_upstream_down_ends_with_connection_error(tmp_path: Path) -> None:
    """Connection refused on every try: retried by the queue, then COMPLETED with runner_connection_error."""
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    async with relay_app(tmp_path, {"base_url": dead, "keys": ["k1:s1", "k2:s2"], "submit_attempts": 2}, max_attempts=2) as app:
        done = await run_relayed(app, ACME, {"prompt": "x"})
        assert done.status["error_type"] == "runner_connection_error"
        assert done.result.status_code == 503
        assert "cannot reach upstream 'up'" in done.result.json()["detail"]
        assert dead not in done.result.text
        assert (await done.record()).attempts == 2
    assert time.monotonic() - started < 15


async def test_429_fails_over_to_another_key_and_cools_the_first(tmp_path: Path, fake: FakeUpstream) -> None:
    """A 429 on one key: the same attempt goes to the next key; the follow-ups stay on it, and
    the cooling key is skipped by the next request."""
    fake.submit_replies = [(429, {"detail": "rate limited"})]
    config = up(fake, keys=["k1:s1", "k2:s2"], cooldown=30.0, cooldown_max=60.0)
    async with relay_app(tmp_path, config) as app:
        first = await run_relayed(app, ACME, {"n": 1})
        assert first.result.json() == {"ok": True}
        assert [c.key for c in fake.submits] == ["Key k1:s1", "Key k2:s2"]
        assert {c.key for c in fake.calls if c.method == "GET"} == {"Key k2:s2"}
        assert (await first.record()).backend_state["key_id"] == "k2"
        second = await run_relayed(app, ACME, {"n": 2})
        assert second.result.json() == {"ok": True}
        assert [c.key for c in fake.submits] == ["Key k1:s1", "Key k2:s2", "Key k2:s2"]
        health = app.runtime.backends["up"].keys.snapshot()
        assert health[0]["key"] == "k1" and health[0]["cooling_for"] > 0 and health[0]["problem"] == "HTTP 429"
    assert fake.accepted == 2


async def test_5xx_at_submit_is_retried_by_the_queue_and_submitted_once(tmp_path: Path, fake: FakeUpstream) -> None:
    """500s exhaust the first attempt (retryable); the queue's second attempt gets through; one upstream request."""
    fake.submit_replies = [(500, {"detail": "boom"})] * 3
    async with relay_app(tmp_path, up(fake, submit_attempts=2), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {})
        assert done.result.json() == {"ok": True}
        assert (await done.record()).attempts == 2
    assert len(fake.submits) == 4 and fake.accepted == 1


async def test_all_attempts_failing_ends_with_server_error(tmp_path: Path, fake: FakeUpstream) -> None:
    """Only 502s from the upstream: after the queue's attempts, COMPLETED with runner_server_error."""
    fake.submit_replies = [(502, b"<html>bad gateway</html>")] * 100
    async with relay_app(tmp_path, up(fake, submit_attempts=2), max_attempts=2) as app:
        done = await run_relayed(app, ACME, {})
        assert done.status["error_type"] == "runner_server_error"
        assert done.result.status_code == 500
        assert "HTTP 502" in done.result.json()["detail"]
    assert len(fake.submits) == 4 and fake.accepted == 0


async def test_status_failures_resume_the_same_upstream_request(tmp_path: Path, fake: FakeUpstream) -> None:
    """503s while following: the attempt is given back and the retry follows the same upstream
    request (from the state saved before waiting) instead of submitting again."""
    fake.status_replies = [(202, {"status": "IN_QUEUE", "queue_position": 0}), *[(503, {"detail": "busy"})] * 3]
    async with relay_app(tmp_path, up(fake), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {})
        assert done.result.json() == {"ok": True}
        record = await done.record()
        assert record.attempts == 2
        assert record.backend_state["upstream_request_id"] in fake.requests
    assert len(fake.submits) == 1 and fake.accepted == 1


async def test_slow_status_calls_time_out_and_are_retried(tmp_path: Path, fake: FakeUpstream) -> None:
    """Status calls slower than http_timeout count as failures; the follower keeps going."""
    slow = ("sleep", 2.0, (202, {"status": "IN_PROGRESS", "logs": []}))
    fake.status_replies = [slow, slow]
    async with relay_app(tmp_path, up(fake, http_timeout=0.5, max_poll_failures=5)) as app:
        done = await run_relayed(app, ACME, {})
        assert done.result.json() == {"ok": True}
        assert (await done.record()).attempts == 1
    assert fake.accepted == 1


async def test_overall_timeout_cancels_upstream_and_fails(tmp_path: Path, fake: FakeUpstream) -> None:
    """An upstream request running past `timeout` is cancelled there and ends 504 request_timeout."""
    fake.hold.set()
    async with relay_app(tmp_path, up(fake, timeout=1.0)) as app:
        done = await run_relayed(app, ACME, {})
        assert done.status["error_type"] == "request_timeout"
        assert done.result.status_code == 504
    assert len(fake.of("PUT", "/cancel")) == 1
    assert fake.accepted == 1


async def test_malformed_submit_answer_is_a_clear_error_not_a_retry(tmp_path: Path, fake: FakeUpstream) -> None:
    """200 with a non-JSON body at submit: the upstream may have taken it, so no second submit; a clear 502."""
    fake.submit_replies = [(200, b"this is not json")]
    async with relay_app(tmp_path, up(fake), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {})
        assert done.status["error_type"] == "runner_incomplete_response"
        assert done.result.status_code == 502
        assert "names no request id" in done.result.json()["detail"]
    assert len(fake.submits) == 1


async def test_malformed_status_and_result_are_clear_errors(tmp_path: Path, fake: FakeUpstream) -> None:
    """Garbage status bodies, then a non-object result: each request still ends with a clear error."""
    fake.status_replies = [(200, b"<html>oops</html>")] * 100
    async with relay_app(tmp_path, up(fake), max_attempts=2) as app:
        done = await run_relayed(app, ACME, {})
        assert done.status["error_type"] == "runner_incomplete_response"
        assert "malformed status" in done.result.json()["detail"]
        fake.status_replies.clear()
        fake.result = [1, 2, 3]
        done = await run_relayed(app, ACME, {})
        assert done.status["error_type"] == "runner_incomplete_response"
        assert "not a JSON object" in done.result.json()["detail"]
    assert len(fake.submits) == 2


async def test_a_result_with_nan_is_a_clear_error_not_a_broken_result(tmp_path: Path, fake: FakeUpstream) -> None:
    """An upstream result holding NaN (valid to Python, not to JSON) ends the request
    with a clear error instead of storing a result that could not be served."""
    fake.result_replies = [(200, b'{"images": [], "seed": NaN}')] * 10
    async with relay_app(tmp_path, up(fake), max_attempts=1) as app:
        done = await run_relayed(app, ACME, {})
        assert done.status["error_type"] == "runner_incomplete_response"
        assert done.result.status_code == 502 and "JSON" in done.result.json()["detail"]


async def test_upstream_422_at_submit_passes_detail_through(tmp_path: Path, fake: FakeUpstream) -> None:
    """The upstream's validation error becomes the request's result: 422 and the same body."""
    detail = {"detail": [{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]}
    fake.submit_replies = [(422, detail)]
    async with relay_app(tmp_path, up(fake), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {"nope": 1})
        assert done.result.status_code == 422
        assert done.result.json() == {**detail, "error_type": "bad_request"}  # fal's detail, and its error_type
        assert done.status["error"] == "Field required"
    assert len(fake.submits) == 1


async def test_completed_with_error_keeps_upstream_code_body_and_type(tmp_path: Path, fake: FakeUpstream) -> None:
    """COMPLETED with an error upstream: same status code, body and error_type, upstream id scrubbed."""
    fake.completed_error = ("Image too large", "bad_request")

    def failed(request: object) -> tuple[int, object]:
        rid = request.id  # type: ignore[attr-defined]
        return (422, {"detail": [{"loc": ["body", "image_url"], "msg": f"Image too large (request {rid})", "type": "image_too_large"}]})

    fake.result = failed
    async with relay_app(tmp_path, up(fake)) as app:
        done = await run_relayed(app, ACME, {})
        assert done.result.status_code == 422
        assert done.status["error_type"] == "bad_request" and done.status["error"] == "Image too large"
        body = done.result.json()
        assert body["detail"][0]["type"] == "image_too_large"
        assert body["detail"][0]["msg"] == f"Image too large (request {done.id})"
        assert done.result.headers["x-fal-error-type"] == "bad_request"


async def test_upstream_401_is_an_operator_error_naming_the_upstream(tmp_path: Path, fake: FakeUpstream) -> None:
    """Every key refused: a clear, non-retried error that names the upstream and its keys setting."""
    fake.submit_replies = [(401, {"detail": "Invalid key"})] * 10
    async with relay_app(tmp_path, up(fake, keys=["k1:s1", "k2:s2"]), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {})
        assert done.status["error_type"] == "internal_error"
        assert "upstream 'up'" in done.result.json()["detail"].lower()
        assert "upstreams.up.keys" in done.result.json()["detail"]
        assert (await done.record()).attempts == 1
    assert [c.key for c in fake.submits] == ["Key k1:s1", "Key k2:s2"]


async def test_media_is_rehosted_and_no_upstream_host_remains(tmp_path: Path, fake: FakeUpstream) -> None:
    """Every media url (nested, list, data URI) is copied into openfal; other fields are kept."""
    image, video = png(8, 6), b"\x00\x00\x00\x08free" * 100
    fake.files = {"/media/a.png": (image, "image/png"), "/media/v.mp4": (video, "video/mp4")}
    inline = "data:image/png;base64," + base64.b64encode(png(4, 4)).decode()
    fake.result = {
        "images": [{"url": f"{fake.url}/media/a.png", "content_type": "image/png", "width": 8, "height": 6}, {"url": inline}],
        "video": {"url": f"{fake.url}/media/v.mp4", "file_name": "clip.mp4"},
        "seed": 42,
        "prompt": "see https://example.invalid/not-a-file",
    }
    async with relay_app(tmp_path, up(fake)) as app:
        done = await run_relayed(app, ACME, {})
        body = done.result.json()
        assert fake.url not in done.result.text and "127.0.0.1" not in done.result.text
        assert body["seed"] == 42 and body["prompt"] == "see https://example.invalid/not-a-file"
        first, second = body["images"]
        assert first["url"].startswith("http://openfal.test/files/")
        assert (first["content_type"], first["width"], first["height"], first["file_size"]) == ("image/png", 8, 6, len(image))
        assert (second["width"], second["height"], second["content_type"]) == (4, 4, "image/png")
        assert body["video"]["file_name"] == "clip.mp4" and body["video"]["content_type"] == "video/mp4"
        assert (await app.client.get(first["url"])).content == image
        assert (await app.client.get(body["video"]["url"])).content == video


async def test_media_404_fails_the_request_cleanly(tmp_path: Path, fake: FakeUpstream) -> None:
    """A result file that 404s: 502 runner_incomplete_response naming where, not the upstream host."""
    fake.files = {"/media/a.png": (png(), "image/png")}
    fake.result = {"images": [{"url": f"{fake.url}/media/a.png"}, {"url": f"{fake.url}/media/gone.png"}]}
    async with relay_app(tmp_path, up(fake)) as app:
        done = await run_relayed(app, ACME, {})
        assert done.result.status_code == 502
        assert done.status["error_type"] == "runner_incomplete_response"
        detail = done.result.json()["detail"]
        assert "images[1].url" in detail and "404" in detail and fake.url not in detail
        assert (await done.record()).attempts == 1


async def test_media_too_large_fails_the_request(tmp_path: Path, fake: FakeUpstream) -> None:
    """A result file over fetch_max_bytes is refused while streaming."""
    fake.files = {"/media/big.bin": (b"x" * 5000, "image/png")}
    fake.result = {"image": {"url": f"{fake.url}/media/big.bin"}}
    async with relay_app(tmp_path, up(fake), fetch_max_bytes=2048) as app:
        done = await run_relayed(app, ACME, {})
        assert done.result.status_code == 502
        assert "larger than 2048 bytes" in done.result.json()["detail"]


async def test_private_media_hosts_are_refused_unless_allowed(tmp_path: Path, fake: FakeUpstream) -> None:
    """SSRF guard: a result URL on another loopback host is refused when private URLs are not
    allowed (the upstream's own origin is trusted, it is configured)."""
    fake.files = {"/media/a.png": (png(), "image/png")}
    port = fake.url.rsplit(":", 1)[1]
    fake.result = {"images": [{"url": f"{fake.url}/media/a.png"}], "other": {"url": f"http://localhost:{port}/media/a.png"}}
    async with relay_app(tmp_path, up(fake), allow_private_urls=False) as app:
        done = await run_relayed(app, ACME, {})
        assert done.result.status_code == 502
        assert "other.url" in done.result.json()["detail"] and "non-public" in done.result.json()["detail"]


async def test_cancel_is_forwarded_upstream(tmp_path: Path, fake: FakeUpstream) -> None:
    """Cancelling a relayed request PUTs the upstream cancel URL with the submitting key."""
    fake.hold.set()
    async with relay_app(tmp_path, up(fake)) as app:
        auth, submitted = await submit(app, ACME, {})
        await wait_for(lambda: len(fake.of("GET", "/status")) >= 2)
        cancel = await app.client.put(submitted["cancel_url"], headers=auth)
        assert cancel.status_code == 202
        done = await finish(app, auth, submitted)
        assert done.status["error_type"] == "client_cancelled"
        assert done.result.status_code == 499
    cancels = fake.of("PUT", "/cancel")
    assert len(cancels) == 1 and cancels[0].key == "Key k1:s1"
    assert list(fake.requests.values())[0].cancelled


async def test_webhook_wakes_the_follower_early(tmp_path: Path, fake: FakeUpstream) -> None:
    """With webhook on, the upstream is given openfal's webhook URL; calling it ends a long
    poll wait (polls are a minute apart, so only the wake-up finishes it in time)."""
    fake.hold.set()
    config = up(fake, webhook=True, poll_interval=60.0, poll_max_interval=60.0)
    async with relay_app(tmp_path, config, public_base_url="http://openfal.test") as app:
        auth, submitted = await submit(app, ACME, {})
        await wait_for(lambda: len(fake.of("GET", "/status")) >= 1)
        hook = fake.submits[0].query["fal_webhook"][0]
        assert hook.startswith("http://openfal.test/api/relay/webhook/up.")
        forged = await app.client.post(hook[:-4] + "0000", json={})
        assert forged.json() == {"woken": False}
        fake.hold.clear()
        fake.polls_until_done = 0
        polls = len(fake.of("GET", "/status"))
        woke = await app.client.post(hook, json={"status": "OK", "payload": {"ignored": True}})
        assert woke.json() == {"woken": True}
        done = await finish(app, auth, submitted, timeout=30)
        assert done.result.json() == {"ok": True}
        assert len(fake.of("GET", "/status")) == polls + 1, "one poll, the one the wake-up asked for"


async def test_many_concurrent_requests_all_complete(tmp_path: Path, fake: FakeUpstream) -> None:
    """Twenty requests at once over four slots, some upstream hiccups: all complete, one submit each."""
    fake.status_replies = [(503, {"detail": "busy"})] * 4
    async with relay_app(tmp_path, up(fake, concurrency=4)) as app:
        submitted = [await submit(app, ACME, {"i": i}) for i in range(20)]
        results = await asyncio.gather(*(finish(app, auth, body, timeout=30) for auth, body in submitted))
        assert all(r.result.json() == {"ok": True} for r in results)
    assert fake.accepted == 20 and len(fake.submits) == 20


async def test_a_relayed_flux_lora_request_passes_its_loras_through_untouched(tmp_path: Path, fake: FakeUpstream) -> None:
    """LoRA URLs are the upstream's to fetch: openfal validates the schema and forwards
    ``loras`` as sent (no download, no rewriting of the URLs)."""
    loras = [{"path": "https://example.com/styles/a.safetensors", "scale": 0.7}, {"path": "owner/hf-lora", "scale": 1.2}]
    async with relay_app(tmp_path, up(fake), routes={"fal-ai/flux-lora": "up"}) as app:
        done = await run_relayed(app, "/fal-ai/flux-lora", {"prompt": "x", "loras": loras})
        assert done.result.status_code == 200
    sent = json.loads(fake.submits[0].body)
    assert [{"path": lora["path"], "scale": lora["scale"]} for lora in sent["loras"]] == loras
    assert fake.submits[0].path.endswith("/fal-ai/flux-lora")
