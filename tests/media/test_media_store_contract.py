"""The ``MediaStore`` contract (media/__init__.py), one suite run against every store:
the local folder and S3 (moto's server on loopback, a local S3-compatible server
standing in for AWS S3, MinIO or R2). A new store passes by adding itself to ``store``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openfal.config import Settings
from openfal.errors import BadRequest, PayloadTooLarge
from openfal.media import MediaStore
from openfal.media.local import LocalMediaStore
from openfal.media.names import new_key
from openfal.media.s3 import S3MediaStore
from openfal.models import MediaBlob

#: S3's smallest part but for the last; the local store takes any size
PART = 5 * 1024 * 1024


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaStore]:
    media: MediaStore = S3MediaStore(request.getfixturevalue("s3_settings")) if request.param == "s3" else LocalMediaStore(tmp_path / "media")
    yield media
    await media.close()


async def read(store: MediaStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.chunks(key)])


async def test_a_stored_file_reads_back_byte_for_byte_with_its_size(store: MediaStore) -> None:
    key = new_key("image/png", "a.png")
    await store.put(MediaBlob(b"\x89PNG" + bytes(range(256)) * 40, "image/png"), key)
    assert await store.size(key) == 4 + 256 * 40
    assert await read(store, key) == b"\x89PNG" + bytes(range(256)) * 40


async def test_a_file_blob_is_stored_from_disk(store: MediaStore, tmp_path: Path) -> None:
    temp = tmp_path / "v.mp4"
    temp.write_bytes(b"video" * 1000)
    key = new_key("video/mp4")
    await store.put(MediaBlob(temp, "video/mp4"), key)
    assert await read(store, key) == b"video" * 1000


async def test_the_stores_urls_lead_back_to_their_keys_and_no_other_url_does(store: MediaStore) -> None:
    key = new_key("image/png")
    await store.put(MediaBlob(b"x", "image/png"), key)
    assert store.key_of(store.url(key, "https://api.example.com")) == key
    assert store.key_of(f"https://any.host/files/{key}") == key  # openfal's own /files/ URL, any host
    assert store.key_of(f"https://any.host/elsewhere/{key}") is None
    assert store.key_of("https://any.host/files/../../etc/passwd") is None


async def test_a_missing_key_has_no_size(store: MediaStore) -> None:
    assert await store.size(new_key("image/png")) is None


async def test_a_deleted_file_is_gone_and_deleting_again_is_harmless(store: MediaStore) -> None:
    key = new_key("image/png")
    await store.put(MediaBlob(b"x", "image/png"), key)
    await store.delete(key)
    assert await store.size(key) is None
    await store.delete(key)


async def test_multipart_parts_are_joined_in_number_order_and_a_resent_part_replaces_the_first(store: MediaStore) -> None:
    key = new_key("video/mp4", "big.mp4")
    upload_id = await store.begin_upload(key, "video/mp4")
    tail = await store.put_part(key, upload_id, 2, b"tail")
    await store.put_part(key, upload_id, 1, b"b" * PART)
    head = await store.put_part(key, upload_id, 1, b"a" * PART)
    size = await store.finish_upload(key, upload_id, [(2, tail), (1, head)], max_bytes=2 * PART)
    assert size == PART + 4 == await store.size(key)
    assert await read(store, key) == b"a" * PART + b"tail"


async def test_multipart_refusals_are_client_errors(store: MediaStore) -> None:
    """An unknown part or a wrong ETag is a BadRequest; a file past the limit is
    PayloadTooLarge, and nothing is stored under the key."""
    key = new_key("application/octet-stream")
    upload_id = await store.begin_upload(key, "application/octet-stream")
    etag = await store.put_part(key, upload_id, 1, b"x" * 100)
    with pytest.raises(BadRequest):
        await store.finish_upload(key, upload_id, [(1, etag), (2, etag)], max_bytes=1000)
    with pytest.raises(BadRequest):
        await store.finish_upload(key, upload_id, [(1, '"0123"')], max_bytes=1000)
    with pytest.raises(PayloadTooLarge):
        await store.finish_upload(key, upload_id, [(1, etag)], max_bytes=10)
    assert await store.size(key) is None


async def test_uploads_begun_before_the_cutoff_are_purged(store: MediaStore) -> None:
    key = new_key("application/octet-stream")
    upload_id = await store.begin_upload(key, "application/octet-stream")
    etag = await store.put_part(key, upload_id, 1, b"x")
    assert await store.purge_stale_uploads(time.time() + 1) >= 1
    with pytest.raises(BadRequest):
        await store.finish_upload(key, upload_id, [(1, etag)], max_bytes=1000)


def test_every_store_is_a_media_store(tmp_path: Path, s3_settings: Settings) -> None:
    """The stores declare nothing the Protocol lacks and lack nothing it declares."""
    members = {name for name in vars(MediaStore) if not name.startswith("_")}
    for store in (LocalMediaStore(tmp_path), S3MediaStore(s3_settings)):
        assert {m for m in members if not callable(getattr(store, m, None))} == set(), type(store).__name__
