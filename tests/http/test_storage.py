"""fal's storage API: the JS client's initiate + raw PUT without auth, and the
multipart uploads both clients use for large files (the clients themselves run in
tests/e2e; here the wire is driven by hand to reach the error paths)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support import App, make_settings, running_app


async def _begin_js_multipart(app: App, **body: str) -> dict:
    auth = {"Authorization": f"Key {await app.key()}"}
    reply = await app.client.post("/storage/upload/initiate-multipart?storage_type=fal-cdn-v3", json=body, headers=auth)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def _put_parts(app: App, upload_url: str, parts: dict[int, bytes]) -> list[dict]:
    answers = []
    for number, data in parts.items():
        reply = await app.client.put(f"{upload_url}/{number}", content=data)
        assert reply.status_code == 200, reply.text
        answers.append(reply.json())
    return answers


async def test_initiate_then_unauthenticated_put_stores_the_file(app: App) -> None:
    """The upload_url needs no Authorization (it is the credential); file_url serves the bytes."""
    auth = {"Authorization": f"Key {await app.key()}"}
    body = (await app.client.post("/storage/upload/initiate?storage_type=fal-cdn-v3", json={"content_type": "image/jpeg", "file_name": "a.jpg"}, headers=auth)).json()
    assert (await app.client.put(body["upload_url"], content=b"jpeg-bytes", headers={"Content-Type": "image/jpeg"})).status_code == 200
    fetched = await app.client.get(body["file_url"])
    assert fetched.content == b"jpeg-bytes"


async def test_a_put_sent_again_to_the_same_upload_url_replaces_the_file(app: App) -> None:
    """A client retrying its PUT (the first answer lost) gets 200 again, not an error."""
    auth = {"Authorization": f"Key {await app.key()}"}
    body = (await app.client.post("/storage/upload/initiate", json={"content_type": "image/png"}, headers=auth)).json()
    for data in (b"first", b"second"):
        assert (await app.client.put(body["upload_url"], content=data, headers={"Content-Type": "image/png"})).status_code == 200
    assert (await app.client.get(body["file_url"])).content == b"second"


async def test_initiate_needs_a_key(app: App) -> None:
    """Without an API key, initiate and token are 401."""
    assert (await app.client.post("/storage/upload/initiate", json={})).status_code == 401
    assert (await app.client.post("/storage/auth/token", json={})).status_code == 401


async def test_tampered_upload_url_is_refused(app: App) -> None:
    """Changing one character of the ticket makes the PUT 401."""
    auth = {"Authorization": f"Key {await app.key()}"}
    body = (await app.client.post("/storage/upload/initiate", json={"content_type": "image/png"}, headers=auth)).json()
    bad = body["upload_url"][:-1] + ("0" if body["upload_url"][-1] != "0" else "1")
    assert (await app.client.put(bad, content=b"x")).status_code == 401


async def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    """Files over max_upload_bytes are refused in one request."""
    async with running_app(make_settings(tmp_path, max_upload_bytes=4096)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        token = (await app.client.post("/storage/auth/token", json={}, headers=auth)).json()
        headers = {"Authorization": f"{token['token_type']} {token['token']}", "Content-Type": "image/png"}
        assert (await app.client.post("/files/upload", content=b"x" * 5000, headers=headers)).status_code == 413
        assert (await app.client.post("/files/upload", content=b"x" * 10, headers=headers)).status_code == 200


async def test_initiate_with_a_malformed_body_is_422(app: App) -> None:
    """A file name that is not a string gets fal's 422 detail, not a crash."""
    auth = {"Authorization": f"Key {await app.key()}"}
    reply = await app.client.post("/storage/upload/initiate", json={"file_name": 7}, headers=auth)
    assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["body", "file_name"]


async def test_multipart_parts_sent_out_of_order_join_in_part_order(app: App) -> None:
    """Parts may arrive in any order (the Python client sends ten at once); the file is
    the parts in number order, and each part's answer carries its ETag in the header
    and the body."""
    begun = await _begin_js_multipart(app, content_type="video/mp4", file_name="clip.mp4")
    answers = await _put_parts(app, begun["upload_url"], {3: b"ccc", 1: b"a" * 10, 2: b"bb"})
    reply = await app.client.put(f"{begun['upload_url']}/4", content=b"d")
    assert reply.headers["etag"] == reply.json()["etag"]
    answers.append(reply.json())
    done = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": answers})
    assert done.status_code == 200 and done.json()["file_url"] == begun["file_url"]
    assert (await app.client.get(begun["file_url"])).content == b"a" * 10 + b"bbcccd"


async def test_multipart_complete_sent_twice_answers_the_same(app: App) -> None:
    """A retried "complete" (the clients retry it) finds the file finished and says so."""
    begun = await _begin_js_multipart(app)
    parts = await _put_parts(app, begun["upload_url"], {1: b"abc"})
    for _ in range(2):
        done = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": parts})
        assert done.status_code == 200 and done.json()["file_url"] == begun["file_url"]
    assert (await app.client.get(begun["file_url"])).content == b"abc"


async def test_multipart_part_sent_twice_keeps_the_last_copy(app: App) -> None:
    """A retried part replaces the earlier one (both clients retry failed parts)."""
    begun = await _begin_js_multipart(app, content_type="application/octet-stream")
    await _put_parts(app, begun["upload_url"], {1: b"first"})
    answers = await _put_parts(app, begun["upload_url"], {1: b"again", 2: b"!"})
    await app.client.post(f"{begun['upload_url']}/complete", json={"parts": answers})
    assert (await app.client.get(begun["file_url"])).content == b"again!"


async def test_multipart_complete_with_a_wrong_etag_or_missing_part_is_400(app: App) -> None:
    """Completion checks every listed part exists and matches its ETag; nothing is
    published until it does."""
    begun = await _begin_js_multipart(app)
    [part] = await _put_parts(app, begun["upload_url"], {1: b"data"})
    missing = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": [part, {"partNumber": 2, "etag": "x"}]})
    assert missing.status_code == 400 and "[2]" in missing.json()["detail"]
    wrong = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": [{"partNumber": 1, "etag": '"0000"'}]})
    assert wrong.status_code == 400
    assert (await app.client.get(begun["file_url"])).status_code == 404
    good = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": [part]})
    assert good.status_code == 200 and (await app.client.get(begun["file_url"])).content == b"data"


async def test_multipart_complete_body_is_validated(app: App) -> None:
    """A malformed completion body is a 422 with fal's detail list; a repeated part is 400."""
    begun = await _begin_js_multipart(app)
    [part] = await _put_parts(app, begun["upload_url"], {1: b"data"})
    bad = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": [{"partNumber": 0, "etag": "x"}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "parts", 0, "partNumber"]
    twice = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": [part, part]})
    assert twice.status_code == 400


async def test_multipart_part_numbers_outside_1_to_10000_are_400(app: App) -> None:
    """Part numbers follow S3's range, whatever the store."""
    begun = await _begin_js_multipart(app)
    assert (await app.client.put(f"{begun['upload_url']}/0", content=b"x")).status_code == 400
    assert (await app.client.put(f"{begun['upload_url']}/10001", content=b"x")).status_code == 400


async def test_multipart_urls_are_credentials_bound_to_their_file(app: App) -> None:
    """A tampered ticket is 401; a valid ticket used on another file's URL (the Python
    client's form) is 401; a single-upload ticket cannot be used for parts."""
    begun = await _begin_js_multipart(app)
    ticket = begun["upload_url"].rsplit("/", 1)[1]
    tampered = begun["upload_url"][:-1] + ("0" if begun["upload_url"][-1] != "0" else "1")
    assert (await app.client.put(f"{tampered}/1", content=b"x")).status_code == 401
    other = await _begin_js_multipart(app)
    assert (await app.client.put(f"{other['file_url']}/multipart/{ticket}/1", content=b"x")).status_code == 401
    auth = {"Authorization": f"Key {await app.key()}"}
    single = (await app.client.post("/storage/upload/initiate", json={}, headers=auth)).json()["upload_url"].rsplit("/", 1)[1]
    assert (await app.client.put(f"/storage/upload/multipart/{single}/1", content=b"x")).status_code == 401


async def test_python_multipart_form_uses_the_file_url_and_an_etag_header(app: App) -> None:
    """Python's form: create at /files/upload/multipart with a CDN token, PUT parts to
    {access_url}/multipart/{uploadId}/{n}, complete there; the lifecycle header given at
    creation applies to the finished file."""
    auth = {"Authorization": f"Key {await app.key()}"}
    token = (await app.client.post("/storage/auth/token", json={}, headers=auth)).json()
    cdn = {"Authorization": f"{token['token_type']} {token['token']}"}
    lifecycle = {"X-Fal-Object-Lifecycle-Preference": json.dumps({"expiration_duration_seconds": 60})}
    created = await app.client.post(
        "/files/upload/multipart", headers={**cdn, **lifecycle, "Content-Type": "text/plain", "X-Fal-File-Name": "notes.txt"}
    )
    assert created.status_code == 200
    access_url, upload_id = created.json()["access_url"], created.json()["uploadId"]
    assert access_url.endswith("/notes.txt")
    etags = []
    for number, data in ((1, b"hello "), (2, b"world")):
        reply = await app.client.put(f"{access_url}/multipart/{upload_id}/{number}", content=data, headers=cdn)
        etags.append({"partNumber": number, "etag": reply.headers["etag"]})
    done = await app.client.post(f"{access_url}/multipart/{upload_id}/complete", json={"parts": etags}, headers=cdn)
    assert done.status_code == 200
    fetched = await app.client.get(access_url)
    assert fetched.content == b"hello world" and fetched.headers["content-type"].startswith("text/plain")
    key = access_url.split("/files/", 1)[1]
    assert await app.runtime.media_index.expire(app.runtime.media, time.time() + 61) == 1
    assert app.runtime.media.path(key) is None


async def test_multipart_creation_needs_a_key_or_token(app: App) -> None:
    """Both creation routes are 401 without credentials (parts then need only the ticket)."""
    assert (await app.client.post("/files/upload/multipart")).status_code == 401
    assert (await app.client.post("/storage/upload/initiate-multipart", json={})).status_code == 401


async def test_multipart_limits_bound_each_part_and_the_whole_file(tmp_path: Path) -> None:
    """A part over max_upload_bytes is 413; parts that add up past
    max_multipart_upload_bytes make completion 413 and abort the upload."""
    async with running_app(make_settings(tmp_path, max_upload_bytes=4096, max_multipart_upload_bytes=6000)) as app:
        begun = await _begin_js_multipart(app)
        assert (await app.client.put(f"{begun['upload_url']}/1", content=b"x" * 5000)).status_code == 413
        parts = await _put_parts(app, begun["upload_url"], {1: b"x" * 4000, 2: b"y" * 4000})
        too_big = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": parts})
        assert too_big.status_code == 413
        again = await app.client.post(f"{begun['upload_url']}/complete", json={"parts": parts[:1]})
        assert again.status_code == 400


async def test_unfinished_multipart_uploads_are_purged(app: App) -> None:
    """Parts of uploads never completed are removed by retention once stale."""
    begun = await _begin_js_multipart(app)
    await _put_parts(app, begun["upload_url"], {1: b"x" * 100})
    assert await app.runtime.media.purge_stale_uploads(time.time() - 3600) == 0
    assert await app.runtime.media.purge_stale_uploads(time.time() + 1) == 1
    reply = await app.client.put(f"{begun['upload_url']}/2", content=b"x")
    assert reply.status_code == 400


async def test_uploaded_pages_and_scripts_never_run_on_openfals_origin(app: App) -> None:
    """Files share the playground's origin: every file is served sandboxed and unsniffed;
    HTML and SVG are downloads, images stay inline."""
    auth = {"Authorization": f"Key {await app.key()}"}
    token = (await app.client.post("/storage/auth/token", json={}, headers=auth)).json()
    cdn = {"Authorization": f"{token['token_type']} {token['token']}"}
    urls = {}
    for name, content_type in (("evil.html", "text/html"), ("evil.svg", "image/svg+xml"), ("ok.png", "image/png")):
        reply = await app.client.post("/files/upload", content=b"<script>alert(1)</script>", headers={**cdn, "Content-Type": content_type, "X-Fal-File-Name": name})
        urls[name] = reply.json()["access_url"]
    for name, url in urls.items():
        served = await app.client.get(url)
        assert served.headers["content-security-policy"] == "sandbox" and served.headers["x-content-type-options"] == "nosniff"
        disposition = served.headers.get("content-disposition", "")
        assert disposition.startswith("attachment") == (name != "ok.png"), name
