"""The relay's pieces on their own: configuration, key health, log mirroring, media helpers."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest

from openfal.backends.base import Job
from openfal.backends.relay import make_relay_backends
from openfal.backends.relay.config import UpstreamConfig, key_id, parse_upstreams
from openfal.backends.relay.follow import Mirror
from openfal.backends.relay.key_pool import KeyPool
from openfal.backends.relay.media import (
    Downloaded,
    DownloadFailed,
    RehostFailed,
    download,
    download_failed,
    find_media,
    from_data_uri,
    mp4_duration,
    rehost,
)
from openfal.errors import ConfigError
from openfal.events import Log, Progress, QueuePosition
from openfal.fetch import FetchError, make_client
from openfal.media.local import LocalMediaStore
from openfal.media.names import new_key
from openfal.models import MediaBlob
from openfal.runtime import make_backends
from tests.support import make_settings

# -- configuration -----------------------------------------------------------------------


def test_each_upstream_becomes_a_backend_named_like_it(tmp_path: Path) -> None:
    """make_backends adds one relay backend per upstream, with its concurrency."""
    settings = make_settings(
        tmp_path,
        upstreams={"fal": {"base_url": "https://queue.fal.run/", "keys": ["a:b", "c:d"], "concurrency": 7}},
        routes={"fal-ai/*": "fal"},
    )
    backends = make_backends(settings)
    relay = backends["fal"]
    assert relay.name == "fal" and relay.max_batch_size == 1 and relay.default_concurrency == 7
    assert relay.config.base_url == "https://queue.fal.run"
    assert relay.batch_key("fal-ai/x", {}) is None
    assert relay.status() == {
        "upstream": "https://queue.fal.run",
        "keys": [{"key": k, "failures": 0, "cooling_for": 0.0, "problem": None} for k in ("a", "c")],
    }


@pytest.mark.parametrize(
    ("upstreams", "routes", "message"),
    [
        ({"fal": {"keys": ["a:b"]}}, {}, "upstreams.fal: base_url: Field required"),
        ({"fal": {"base_url": "queue.fal.run", "keys": ["a:b"]}}, {}, "must be an absolute http(s) URL"),
        ({"fal": {"base_url": "https://q", "keys": []}}, {}, "upstreams.fal: keys"),
        ({"fal": {"base_url": "https://q", "keys": ["a b"]}}, {}, "spaces or control characters"),
        ({"fal": {"base_url": "https://q", "keys": ["a:b", "a:c"]}}, {}, "the same key id appears twice"),
        ({"fal": {"base_url": "https://q", "keys": ["a:b"], "pol_interval": 1}}, {}, "pol_interval: Extra inputs are not permitted"),
        ({"local": {"base_url": "https://q", "keys": ["a:b"]}}, {}, "built-in backend name"),
        ({}, {"fal-ai/*": "fal"}, "routes['fal-ai/*'] points at 'fal'"),
    ],
)
def test_bad_configuration_is_a_clear_config_error(tmp_path: Path, upstreams: dict[str, Any], routes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_relay_backends(make_settings(tmp_path, upstreams=upstreams, routes=routes), existing={"builtin", "local"})
    assert message in str(caught.value)


def test_key_ids_never_include_the_secret() -> None:
    assert key_id("abc:secret") == "abc"
    assert key_id("opaque-token").startswith("sha256:") and "opaque" not in key_id("opaque-token")


# -- key health ----------------------------------------------------------------------------


def test_keys_cool_down_longer_each_failure_and_recover() -> None:
    now = [0.0]
    config = parse_upstreams({"u": {"base_url": "https://q", "keys": ["a:1", "b:2"], "cooldown": 1, "cooldown_max": 3}})[0]
    pool = KeyPool(config, clock=lambda: now[0])
    a = pool.pick()
    assert a is not None and a.id == "a"
    assert pool.failed(a, "HTTP 429") == 1
    assert pool.pick().id == "b" and pool.pick().id == "b"  # a is cooling
    assert [pool.failed(a, "HTTP 429"), pool.failed(a, "HTTP 429")] == [2, 3]  # doubles, capped
    b = pool.get("b")
    pool.failed(b, "HTTP 401", auth=True)
    assert pool.pick() is None and pool.ready_in() == 3
    now[0] = 3.5
    assert pool.pick().id == "a"
    pool.succeeded(a)
    assert a.failures == 0 and pool.snapshot()[0] == {"key": "a", "failures": 0, "cooling_for": 0.0, "problem": None}


# -- mirroring -----------------------------------------------------------------------------


def record_job() -> tuple[Job, list[Any]]:
    events: list[Any] = []
    return Job(request_id="r", endpoint_id="e", input={}, emit=events.append), events


def entry(i: int) -> dict[str, str]:
    return {"message": f"m{i}", "level": "INFO", "timestamp": f"t{i}"}


def test_mirror_passes_on_each_log_once_and_positions_on_change() -> None:
    """Each upstream log line is emitted once; positions on change; leaving the queue clears it."""
    job, events = record_job()
    mirror = Mirror()
    mirror.apply(job, {"status": "IN_QUEUE", "queue_position": 2})
    mirror.apply(job, {"status": "IN_QUEUE", "queue_position": 2})
    mirror.apply(job, {"status": "IN_PROGRESS", "logs": [entry(1)], "progress": {"step": 1, "total": 4}})
    mirror.apply(job, {"status": "IN_PROGRESS", "logs": [entry(1), entry(2), {"message": "x", "level": "weird"}]})
    mirror.apply(job, {"status": "COMPLETED", "logs": [entry(1), entry(2), {"message": "x", "level": "weird"}]})
    assert events == [QueuePosition(2), QueuePosition(None), Log("m1"), Progress(1, 4), Log("m2"), Log("x", "INFO")]


def test_mirror_handles_upstreams_that_send_only_new_lines_and_resumes_from_a_count() -> None:
    job, events = record_job()
    mirror = Mirror()
    mirror.apply(job, {"status": "IN_PROGRESS", "logs": [entry(1), entry(2)]})
    mirror.apply(job, {"status": "IN_PROGRESS", "logs": [entry(3)]})
    mirror.apply(job, {"status": "IN_PROGRESS", "logs": [entry(3), entry(4)]})
    assert [e.message for e in events] == ["m1", "m2", "m3", "m4"]
    job, events = record_job()
    Mirror(logs_seen=2).apply(job, {"status": "IN_PROGRESS", "logs": [entry(1), entry(2), entry(3)]})
    assert [e.message for e in events] == ["m3"]


# -- media ---------------------------------------------------------------------------------


def test_find_media_finds_url_dicts_only() -> None:
    payload = {
        "images": [{"url": "https://x/a.png"}, {"url": "data:image/png;base64,AA=="}],
        "video": {"url": "http://x/v.mp4", "nested": {"url": "https://ignored"}},
        "image_url": "https://not-a-file-dict",
        "other": {"url": "ftp://x"},
    }
    assert [ref.where for ref in find_media(payload)] == ["images[0]", "images[1]", "video"]


def test_data_uris_decode_within_limits() -> None:
    got = from_data_uri("data:image/png;base64," + base64.b64encode(b"abc").decode(), 100)
    assert (got.data, got.content_type, got.size) == (b"abc", "image/png", 3)
    assert from_data_uri("data:,a%20b", 100).data == b"a b"
    with pytest.raises(DownloadFailed, match="larger than 4 bytes"):
        from_data_uri("data:;base64," + base64.b64encode(b"12345").decode(), 4)
    with pytest.raises(DownloadFailed, match="malformed"):
        from_data_uri("data:nocomma", 100)


def mp4(seconds: float, timescale: int = 1000) -> bytes:
    mvhd_body = bytes(4) + struct.pack(">III", 0, 0, timescale) + struct.pack(">I", int(seconds * timescale)) + bytes(80)
    mvhd = struct.pack(">I4s", 8 + len(mvhd_body), b"mvhd") + mvhd_body
    moov = struct.pack(">I4s", 8 + len(mvhd), b"moov") + mvhd
    ftyp = struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x02\x00"
    return ftyp + struct.pack(">I4s", 12, b"mdat") + b"abcd" + moov


def test_mp4_duration_from_mvhd(tmp_path: Path) -> None:
    assert mp4_duration(mp4(2.5)) == 2.5
    path = tmp_path / "v.mp4"
    path.write_bytes(mp4(4.0, 90000))
    assert mp4_duration(path) == 4.0
    assert mp4_duration(b"not a video") is None


async def test_rehost_replaces_all_or_nothing_and_counts_usage(tmp_path: Path) -> None:
    """All files fetched, then replaced; usage reports the video seconds (billing counts
    images from the published result).
    One failure raises and leaves no temporary file behind."""
    spilled = tmp_path / "big.part"

    async def fetch(url: str) -> Downloaded:
        if url.endswith("v.mp4"):
            return Downloaded(mp4(3.0), "video/mp4", 0)
        if url.endswith("spill"):
            spilled.write_bytes(b"x")
            return Downloaded(spilled, "image/png", 1)
        if url.endswith("fail"):
            raise DownloadFailed("answered HTTP 404", retryable=False)
        return Downloaded(b"img", "application/octet-stream", 3)

    payload = {"images": [{"url": "https://h/a.jpg", "width": 1000, "height": 500, "content_type": "image/jpeg"}], "video": {"url": "https://h/v.mp4"}, "n": 1}
    body, usage = await rehost(payload, fetch, max_bytes=100)
    assert isinstance(body["images"][0], MediaBlob) and body["images"][0].content_type == "image/jpeg"
    assert (body["images"][0].width, body["images"][0].height, body["images"][0].file_name) == (1000, 500, "a.jpg")
    assert body["n"] == 1 and payload["images"][0]["url"] == "https://h/a.jpg"  # the input is not modified
    assert usage.video_seconds == 3.0
    with pytest.raises(RehostFailed, match=r"at b\[0\]\.url answered HTTP 404"):
        await rehost({"a": {"url": "https://h/spill"}, "b": [{"url": "https://h/fail"}]}, fetch, max_bytes=100)
    assert not spilled.exists()


def test_upstream_config_defaults_are_sane() -> None:
    config = UpstreamConfig(name="fal", base_url="https://queue.fal.run", keys=("a:b",))
    assert config.poll_interval == 0.2 and config.concurrency == 32 and config.timeout == 3600


async def test_a_request_that_left_the_upstream_queue_reports_in_progress(tmp_path) -> None:
    """Once the upstream starts the work, our status says IN_PROGRESS again (not IN_QUEUE)."""
    from openfal.models import Status
    from openfal.store.db import Database
    from openfal.store.requests import RequestStore

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await db.migrate()
    store = RequestStore(db)
    record = await store.insert(
        id="r1", app="a/b", endpoint_id="a/b", backend="up", key_id=None, priority=0, input={}, base_url="http://x"
    )
    await store.record_events(record.id, upstream_position=3)
    assert (await store.get(record.id)).upstream_position == 3
    await store.record_events(record.id, upstream_position=None)
    fresh = await store.get(record.id)
    assert fresh.upstream_position is None and fresh.status is Status.IN_QUEUE
    await db.close()


# -- one media store, one fetch ---------------------------------------------------------------


class _CountingStore(LocalMediaStore):
    closed = 0

    async def close(self) -> None:
        self.closed += 1
        await super().close()


async def test_the_runtimes_media_store_is_the_one_every_fetch_reads(tmp_path: Path) -> None:
    """make_backends hands the store it is given to the relay and the local backend; a
    fetch client reads our own URLs from it and, borrowing it, does not close it."""
    settings = make_settings(tmp_path, upstreams={"fal": {"base_url": "https://queue.fal.run", "keys": ["a:b"]}}, allow_private_urls=False)
    store = _CountingStore(tmp_path / "media")
    backends = make_backends(settings, media=store)
    assert backends["fal"]._media is store  # type: ignore[attr-defined]
    if "local" in backends:
        assert backends["local"].media is store  # type: ignore[attr-defined]
    key = new_key("image/png", "in.png")
    await store.put(MediaBlob(b"own bytes", "image/png"), key)
    async with make_client(settings, media=store) as client:
        got = await download(lambda _: client, f"http://openfal.example/files/{key}", max_bytes=100, timeout=5, tmp_dir=tmp_path)
    assert (got.data, got.content_type) == (b"own bytes", "image/png") and store.closed == 0
    await backends["fal"].close()
    assert store.closed == 0


@pytest.mark.parametrize(
    ("error", "problem", "retryable"),
    [
        (FetchError("status", "https://h/a", status=404), "answered HTTP 404", False),
        (FetchError("status", "https://h/a", status=503, retryable=True), "answered HTTP 503", True),
        (FetchError("too_large", "https://h/a", limit=10, size=99), "is larger than 10 bytes (99)", False),
        (FetchError("too_large", "https://h/a", limit=10), "is larger than 10 bytes", False),
        (FetchError("deadline", "https://h/a", limit=2.5, retryable=True), "did not download within 2.5 s", True),
        (FetchError("scheme", "ftp://h/a"), "is not an http(s) URL", False),
        (FetchError("redirects", "https://h/a"), "redirected more than 5 times", False),
        (FetchError("bad_base64", "data:;base64,@"), "is a data URI with invalid base64", False),
    ],
)
def test_a_failed_fetch_is_worded_for_the_relay(error: FetchError, problem: str, retryable: bool) -> None:
    failed = download_failed(error)
    assert (str(failed), failed.retryable) == (problem, retryable)
