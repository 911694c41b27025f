"""Media stores and publishing. S3 is exercised against moto's server mode on loopback,
a local S3-compatible server standing in for AWS S3, MinIO or R2."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from openfal.config import Settings
from openfal.media.local import LocalMediaStore
from openfal.media.names import is_valid_key, new_key
from openfal.media.publish import publish
from openfal.media.s3 import S3MediaStore
from openfal.models import MediaBlob


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, format="PNG")
    return out.getvalue()


def test_keys_are_unguessable_and_traversal_is_refused() -> None:
    """New keys are a random folder plus a safe name; odd or traversing keys are not valid."""
    key = new_key("image/png", "../../evil name.png")
    token, name = key.split("/")
    assert len(token) >= 24 and name == "evil_name.png"
    assert new_key("image/jpeg").endswith("/output.jpg")
    for bad in ["../x/y.png", "short/x.png", f"{token}/../../etc", f"{token}/a/b.png"]:
        assert not is_valid_key(bad)


@pytest.mark.parametrize(
    ("content_type", "file_name"),
    [
        ("image/png", "a..b.png"),
        ("image/png", "x" * 300),
        ("image/png", "y" * 120 + ".png"),
        ("image/png", "..."),
        ("application/x-unknown", None),
        ("text/x-c++src", "notes"),
        ("image/jpeg", "../../.hidden"),
    ],
)
def test_new_keys_are_always_valid(content_type: str, file_name: str | None) -> None:
    """Whatever name a client sends, the key made for it is one the store will serve."""
    key = new_key(content_type, file_name)
    assert is_valid_key(key), key
    if file_name and file_name.endswith(".png"):
        assert key.endswith(".png")


async def test_local_store_puts_serves_and_deletes_by_key(tmp_path: Path) -> None:
    """put() then path() finds the file under the root, url() is under /files/, delete() removes it."""
    store = LocalMediaStore(tmp_path)
    key = new_key("image/png", "a.png")
    await store.put(MediaBlob(b"png", "image/png"), key)
    assert store.path(key) == tmp_path / key and store.path(key).read_bytes() == b"png"
    assert [p.name for p in (tmp_path / key).parent.iterdir()] == ["a.png"]  # no partial file left
    assert store.url(key, "https://api.example.com") == f"https://api.example.com/files/{key}"
    await store.delete(key)
    assert store.path(key) is None and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["../x", "../../etc/passwd", "x", "", "abcdefghijklmnopqrstuvwx/../../y.png", "/etc/passwd", "abcdefghijklmnopqrstuvwx/a/b.png"])
async def test_local_store_refuses_malformed_keys(tmp_path: Path, key: str) -> None:
    """Traversing or malformed keys are neither written, served, linked nor deleted."""
    root = tmp_path / "media"
    store = LocalMediaStore(root)
    kept = new_key("image/png")
    await store.put(MediaBlob(b"keep", "image/png"), kept)
    (tmp_path / "x").write_bytes(b"outside")
    with pytest.raises(ValueError):
        await store.put(MediaBlob(b"evil", "image/png"), key)
    with pytest.raises(ValueError):
        store.url(key, "http://h")
    assert store.path(key) is None
    await store.delete(key)
    assert store.path(kept).read_bytes() == b"keep" and (tmp_path / "x").read_bytes() == b"outside"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["media", "x"]


async def test_publish_replaces_nested_blobs_with_file_objects(tmp_path: Path) -> None:
    """Blobs anywhere in the payload (bytes or temp files) become fal File objects; other values stay."""
    store = LocalMediaStore(tmp_path / "media")
    temp = tmp_path / "video.mp4"
    temp.write_bytes(b"mp4" * 10)
    stored = []

    async def on_stored(key: str, size: int) -> None:
        stored.append((key, size))

    payload = {
        "images": [MediaBlob(b"jpeg", "image/jpeg", None, 8, 6)],
        "video": MediaBlob(temp, "video/mp4", "clip.mp4", extra={"duration": 2.5}),
        "seed": 3,
    }
    out = await publish(payload, media=store, base_url="http://h", inline=False, on_stored=on_stored)
    image, video = out["images"][0], out["video"]
    assert image["url"].startswith("http://h/files/") and image["content_type"] == "image/jpeg"
    assert (image["width"], image["height"], image["file_size"]) == (8, 6, 4)
    assert video["file_name"] == "clip.mp4" and video["file_size"] == 30 and video["duration"] == 2.5
    assert out["seed"] == 3 and len(stored) == 2


async def test_publish_inline_gives_data_uris(tmp_path: Path) -> None:
    """sync_mode: files (bytes or temp files) become data URIs and nothing is written to the store."""
    store = LocalMediaStore(tmp_path / "media")
    temp = tmp_path / "v.mp4"
    temp.write_bytes(b"mp4")
    payload = {"images": [MediaBlob(b"abc", "image/png", width=2, height=1)], "video": MediaBlob(temp, "video/mp4", "v.mp4")}
    out = await publish(payload, media=store, base_url="http://h", inline=True)
    image, video = out["images"][0], out["video"]
    assert image["url"] == "data:image/png;base64," + base64.b64encode(b"abc").decode()
    assert (image["content_type"], image["file_size"], image["width"], image["height"]) == ("image/png", 3, 2, 1)
    assert video["url"] == "data:video/mp4;base64," + base64.b64encode(b"mp4").decode() and video["file_name"] == "v.mp4"
    assert "width" not in video
    assert list((tmp_path / "media").iterdir()) == []


async def test_s3_presigned_urls_serve_the_stored_bytes(s3_settings: Settings) -> None:
    """moto (a local S3-compatible server standing in for AWS): a put image is fetched back byte
    for byte over HTTP through its presigned URL, under the configured prefix."""
    store = S3MediaStore(s3_settings)
    image = _png(5, 4)
    key = new_key("image/png", "x.png")
    await store.put(MediaBlob(image, "image/png"), key)
    url = store.url(key, "http://unused")
    assert "X-Amz-Signature=" in url and f"/media/t/{key}?" in url
    async with httpx.AsyncClient() as client:
        got = await client.get(url)
    assert got.status_code == 200 and got.content == image and got.headers["content-type"] == "image/png"
    await store.close()


async def test_s3_temp_file_blobs_are_uploaded_from_disk(s3_settings: Settings, tmp_path: Path) -> None:
    """moto (a local S3-compatible server standing in for AWS): a Path blob goes up with
    upload_file (streamed from disk) and keeps its content type."""
    store = S3MediaStore(s3_settings)
    uploads = []
    upload_file = store.client.upload_file

    def spy(filename: str, *args: object, **kwargs: object) -> None:
        uploads.append(filename)
        upload_file(filename, *args, **kwargs)

    store.client.upload_file = spy
    temp = tmp_path / "v.mp4"
    temp.write_bytes(b"video" * 1000)
    key = new_key("video/mp4")
    await store.put(MediaBlob(temp, "video/mp4"), key)
    assert uploads == [str(temp)]
    async with httpx.AsyncClient() as client:
        got = await client.get(store.url(key, "http://unused"))
    assert got.content == b"video" * 1000 and got.headers["content-type"] == "video/mp4"
    await store.close()


def _big_video_file(folder: Path) -> tuple[Path, bytes]:
    """A 12 MiB stand-in for an encoded video (past boto3's 8 MiB multipart threshold)."""
    data = bytes(range(256)) * (12 * 1024 * 4)
    path = folder / "video-x.mp4"
    path.write_bytes(data)
    return path, data


def _never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: MediaBlob) -> bytes:
        raise AssertionError("a file-backed blob was read whole into memory")

    monkeypatch.setattr(MediaBlob, "read", refuse)


async def test_a_video_file_is_published_to_the_local_folder_without_reading_it_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """publish() copies a file-backed blob into the media folder in pieces (never
    MediaBlob.read), and the copy is byte for byte the file."""
    path, data = _big_video_file(tmp_path)
    store = LocalMediaStore(tmp_path / "media")
    _never_read(monkeypatch)
    out = await publish({"video": MediaBlob(path, "video/mp4", "v.mp4")}, media=store, base_url="http://h", inline=False)
    key = out["video"]["url"].removeprefix("http://h/files/")
    stored = store.path(key)
    assert stored is not None and stored.read_bytes() == data and out["video"]["file_size"] == len(data)


async def test_a_video_file_is_streamed_to_s3_in_parts(s3_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto (a local S3-compatible server standing in for AWS): a 12 MiB file-backed blob
    goes up as a multipart upload read from disk (its ETag has a part count), never
    MediaBlob.read; the object is byte for byte the file."""
    path, data = _big_video_file(tmp_path)
    store = S3MediaStore(s3_settings)
    _never_read(monkeypatch)
    out = await publish({"video": MediaBlob(path, "video/mp4", "v.mp4")}, media=store, base_url="http://unused", inline=False)
    key = httpx.URL(out["video"]["url"]).path.removeprefix("/media/")
    head = store.client.head_object(Bucket="media", Key=key)
    assert head["ETag"].strip('"').rsplit("-", 1)[-1].isdigit() and "-" in head["ETag"]
    async with httpx.AsyncClient() as client:
        got = await client.get(out["video"]["url"])
    assert got.content == data and got.headers["content-type"] == "video/mp4"
    await store.close()


def test_s3_public_url_mode_builds_cdn_urls(s3_settings: Settings) -> None:
    """With s3_public_url set, URLs are {public}/{prefix}{key} rather than presigned."""
    store = S3MediaStore(s3_settings.model_copy(update={"s3_public_url": "https://cdn.example.com/"}))
    assert store.url("abc/x.png", "http://unused") == "https://cdn.example.com/t/abc/x.png"


async def test_s3_multipart_uploads_join_in_the_bucket(s3_settings: Settings) -> None:
    """moto (a local S3-compatible server standing in for AWS): parts go to S3's own
    multipart upload (5 MB minimum but for the last) and S3 joins them in part order."""
    store = S3MediaStore(s3_settings)
    key = new_key("video/mp4", "big.mp4")
    upload_id = await store.begin_upload(key, "video/mp4")
    first, last = b"a" * (5 * 1024 * 1024), b"tail"
    tail_etag = await store.put_part(key, upload_id, 2, last)
    first_etag = await store.put_part(key, upload_id, 1, first)
    assert await store.finish_upload(key, upload_id, [(2, tail_etag), (1, first_etag)], max_bytes=10 * 1024 * 1024) == len(first) + 4
    async with httpx.AsyncClient() as client:
        got = await client.get(store.url(key, "http://unused"))
    assert got.content == first + last and got.headers["content-type"] == "video/mp4"
    # a client retrying "complete" learns the size of the finished file
    assert await store.finish_upload(key, upload_id, [(1, first_etag), (2, tail_etag)], max_bytes=10 * 1024 * 1024) == len(first) + 4
    await store.close()


async def test_s3_multipart_file_urls_on_openfal_redirect_to_the_bucket(s3_settings: Settings) -> None:
    """moto (a local S3-compatible server standing in for AWS): with S3 media a multipart
    upload's file URL is on openfal's host (the Python client derives part URLs from it)
    and redirects to the bucket, which serves the joined bytes."""
    from tests.support import make_settings, running_app

    s3 = s3_settings.model_dump(include={"media_backend", "s3_bucket", "s3_endpoint_url", "s3_region", "s3_prefix"})
    # no reaper: it would abort the upload, which moto dates to 2010
    settings = make_settings(s3_settings.data_dir, in_process_workers=False, **s3)
    async with running_app(settings) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        begun = (await app.client.post("/storage/upload/initiate-multipart", json={"content_type": "image/png"}, headers=auth)).json()
        assert begun["file_url"].startswith("http://openfal.test/files/")
        part = (await app.client.put(f"{begun['upload_url']}/1", content=b"png-bytes")).json()
        done = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": [part]})
        assert done.status_code == 200, done.text
        redirect = await app.client.get(begun["file_url"])
        assert redirect.status_code == 307 and "X-Amz-Signature=" in redirect.headers["location"]
    async with httpx.AsyncClient() as client:
        assert (await client.get(redirect.headers["location"])).content == b"png-bytes"


def test_s3_store_recognises_its_own_urls(s3_settings: Settings) -> None:
    """Presigned and unsigned bucket URLs, CDN URLs and openfal's /files/ form name a key;
    other buckets, prefixes and hosts do not."""
    store = S3MediaStore(s3_settings)
    key = new_key("image/png", "x.png")
    assert store.key_of(store.url(key, "http://unused")) == key
    assert store.key_of(f"{s3_settings.s3_endpoint_url}/media/t/{key}") == key
    assert store.key_of(f"https://media.s3.amazonaws.com/t/{key}") == key
    assert store.key_of(f"http://openfal.example/files/{key}") == key
    assert store.key_of(f"{s3_settings.s3_endpoint_url}/other-bucket/t/{key}") is None
    assert store.key_of(f"{s3_settings.s3_endpoint_url}/media/elsewhere/{key}") is None
    assert store.key_of("https://example.com/a.png") is None
    cdn = S3MediaStore(s3_settings.model_copy(update={"s3_public_url": "https://cdn.example.com/"}))
    assert cdn.key_of(f"https://cdn.example.com/t/{key}") == key


async def test_inputs_in_a_private_bucket_are_read_through_the_store(s3_settings: Settings) -> None:
    """moto (a local S3-compatible server standing in for AWS) on 127.0.0.1 plays a MinIO
    on a private network: with the private-address guard on, a worker still gets a file
    of ours by its presigned URL (read with the store's credentials), an over-limit one is
    refused from its size alone, and a foreign private URL stays refused."""
    from openfal.errors import InputFetchFailed
    from openfal.fetch import fetch_bytes, make_client

    settings = s3_settings.model_copy(update={"allow_private_urls": False})
    store = S3MediaStore(settings)
    key = new_key("image/png", "in.png")
    await store.put(MediaBlob(_png(8, 8), "image/png"), key)
    url = store.url(key, "http://unused")
    async with make_client(settings) as client:
        assert await fetch_bytes(url, settings, field="image_url", client=client) == _png(8, 8)
        with pytest.raises(InputFetchFailed, match="larger than"):
            await fetch_bytes(url, settings, field="image_url", max_bytes=10, client=client)
        with pytest.raises(InputFetchFailed, match="private"):
            await fetch_bytes(f"{settings.s3_endpoint_url}/media/t/{new_key('image/png')}", settings, field="image_url", client=client)
    await store.close()


async def test_expired_media_is_deleted_from_the_store_and_the_index(tmp_path: Path) -> None:
    """MediaIndex.expire removes files past their time and keeps the rest (and keep_forever ones)."""
    import time

    from openfal.store.db import Database
    from openfal.store.media_index import MediaIndex

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await db.migrate()
    store = LocalMediaStore(tmp_path / "media")
    index = MediaIndex(db, default_ttl=60)
    old, young, forever = (new_key("image/png") for _ in range(3))
    for key in (old, young, forever):
        await store.put(MediaBlob(b"x", "image/png"), key)
    await index.add(old, 1, ttl=1)
    await index.add(young, 1)
    await index.add(forever, 1, keep_forever=True)
    assert await index.expire(store, time.time() + 30) == 1
    assert store.path(old) is None and store.path(young) is not None and store.path(forever) is not None
    assert await index.expire(store, time.time() + 10**9) == 1
    assert store.path(forever) is not None
    await db.close()
