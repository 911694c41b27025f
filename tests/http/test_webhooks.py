"""Webhooks: fal's payload, ED25519 signatures verifiable with the published JWKS,
retries with backoff from the outbox."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

from openfal.webhooks import verify
from tests.support import App, Receiver, make_settings, running_app, sample, scrape


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _outbox_row_in_state(app: App, request_id: str, state: str, timeout: float = 15.0) -> dict:
    """The receiver may see the POST before the sender has recorded its answer, so wait
    for the outbox row itself rather than for the receiver."""
    deadline = time.monotonic() + timeout
    while not (rows := await app.runtime.outbox.for_request(request_id)) or rows[0]["state"] != state:
        assert time.monotonic() < deadline, f"outbox row never reached {state!r}: {rows}"
        await asyncio.sleep(0.05)
    return rows[0]


async def test_webhook_gets_fals_payload_signed_with_the_published_key(app: App) -> None:
    """The receiver gets {request_id, gateway_request_id, status: OK, payload} and the
    signature verifies against /.well-known/jwks.json."""
    receiver = Receiver()
    try:
        auth = {"Authorization": f"Key {await app.key()}"}
        body = (await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(receiver.url)}", json={"n": 1}, headers=auth)).json()
        await _wait_for(lambda: receiver.received)
        headers, raw = receiver.received[0]
        payload = json.loads(raw)
        assert payload == {"request_id": body["request_id"], "gateway_request_id": body["request_id"], "status": "OK", "payload": {"echo": {"n": 1}}}
        jwks = (await app.client.get("/.well-known/jwks.json")).json()
        assert verify(jwks, headers, raw)
        assert not verify(jwks, headers, raw + b" ")
    finally:
        receiver.close()


async def test_webhook_for_a_failure_has_status_error_and_the_error_body(app: App) -> None:
    """A failed request's webhook says ERROR, carries `error` and the error body as payload."""
    receiver = Receiver()
    try:
        auth = {"Authorization": f"Key {await app.key()}"}
        await app.client.post(
            f"/openfal/utils/sleep?fal_webhook={quote(receiver.url)}", json={"seconds": 0, "steps": 1, "fail_with": "nope"}, headers=auth
        )
        await _wait_for(lambda: receiver.received)
        payload = json.loads(receiver.received[0][1])
        assert payload["status"] == "ERROR"
        assert payload["error"] == "Invalid status code: 500"
        assert payload["payload"]["detail"] == "nope"
    finally:
        receiver.close()


async def test_failed_deliveries_are_retried_until_they_succeed(app: App) -> None:
    """A receiver that answers 503 twice gets the webhook on the third attempt."""
    receiver = Receiver(fail_first=2)
    try:
        auth = {"Authorization": f"Key {await app.key()}"}
        admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
        before = await scrape(app.client, admin)
        body = (await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(receiver.url)}", json={}, headers=auth)).json()
        row = await _outbox_row_in_state(app, body["request_id"], "delivered")
        assert row["attempts"] == 3 and len(receiver.received) == 1
        after = await scrape(app.client, admin)
        counted = {o: sample(after, "openfal_webhook_attempts_total", outcome=o) - sample(before, "openfal_webhook_attempts_total", outcome=o) for o in ("retry", "delivered")}
        assert counted == {"retry": 2, "delivered": 1}
    finally:
        receiver.close()


async def test_delivery_gives_up_after_max_attempts(tmp_path) -> None:
    """After webhook_max_attempts failures the delivery is marked failed, with the error."""
    receiver = Receiver(fail_first=100)
    try:
        async with running_app(make_settings(tmp_path, auth_enabled=False, webhook_max_attempts=2)) as app:
            body = (await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(receiver.url)}", json={})).json()
            row = await _outbox_row_in_state(app, body["request_id"], "failed")
            assert row["attempts"] == 2 and row["last_status"] == 503
    finally:
        receiver.close()


async def test_webhooks_to_private_addresses_are_refused_by_default(tmp_path) -> None:
    """Without allow_private_urls, a webhook to 127.0.0.1 is not sent and is marked failed."""
    receiver = Receiver()
    try:
        async with running_app(make_settings(tmp_path, auth_enabled=False, allow_private_urls=False)) as app:
            body = (await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(receiver.url)}", json={})).json()
            row = await _outbox_row_in_state(app, body["request_id"], "failed")
            assert "non-public" in row["last_error"]
            assert receiver.received == []
    finally:
        receiver.close()


async def test_webhook_signature_verifies_with_pynacl_as_a_receiver_would(app: App) -> None:
    """A receiver that knows nothing of openfal (PyNaCl, libsodium's ED25519, not the
    signer's `cryptography`) checks the signature over fal's message with the key
    from the JWKS, and a tampered body or request id fails."""
    import base64
    import hashlib

    import nacl.exceptions
    import nacl.signing

    receiver = Receiver()
    try:
        auth = {"Authorization": f"Key {await app.key()}"}
        await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(receiver.url)}", json={"n": 2}, headers=auth)
        await _wait_for(lambda: receiver.received)
        headers, raw = receiver.received[0]
        headers = {k.lower(): v for k, v in headers.items()}
        (key,) = (await app.client.get("/.well-known/jwks.json")).json()["keys"]
        assert (key["kty"], key["crv"]) == ("OKP", "Ed25519")
        verify_key = nacl.signing.VerifyKey(base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4)))

        def message(request_id: str, body: bytes) -> bytes:
            parts = [request_id, headers["x-fal-webhook-user-id"], headers["x-fal-webhook-timestamp"], hashlib.sha256(body).hexdigest()]
            return "\n".join(parts).encode()

        signature = bytes.fromhex(headers["x-fal-webhook-signature"])
        request_id = headers["x-fal-webhook-request-id"]
        assert verify_key.verify(message(request_id, raw), signature) == message(request_id, raw)
        assert abs(time.time() - int(headers["x-fal-webhook-timestamp"])) < 300
        for tampered in (message(request_id, raw + b" "), message(request_id + "x", raw)):
            try:
                verify_key.verify(tampered, signature)
            except nacl.exceptions.BadSignatureError:
                continue
            raise AssertionError("a tampered message verified")
    finally:
        receiver.close()


BAD_WEBHOOK_URLS = [
    "ftp://example.com/hook",  # not http(s)
    "http:///hook",  # no host
    "hook.example.com/cb",  # not absolute
    "http://☃.com/",  # not IDNA-encodable: httpx raises InvalidURL when sending
    "http://xn--n3h.com/",  # an A-label that decodes to a disallowed code point
    "http://a b.example/",  # a space in the host
    "http://example.com:99999/",  # no such port
    "https://example.com/" + "a" * 2100,  # past the length cap
]


async def test_webhook_urls_the_client_cannot_use_are_422_at_submit(app: App) -> None:
    """fal_webhook is checked the way the deliverer's client parses it; a URL it could
    never send to is fal's 422 naming the query parameter, and nothing is queued."""
    auth = {"Authorization": f"Key {await app.key()}"}
    for url in BAD_WEBHOOK_URLS:
        response = await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(url)}", json={}, headers=auth)
        assert response.status_code == 422, (url, response.text)
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["query", "fal_webhook"] and detail["type"] == "value_error", detail
        assert "fal_webhook" in detail["msg"]
    assert await app.runtime.requests.history(None) == []


async def test_an_internationalised_webhook_host_is_accepted(app: App) -> None:
    """A host name in Unicode that IDNA encodes (bücher.example) is a valid webhook URL."""
    auth = {"Authorization": f"Key {await app.key()}"}
    response = await app.client.post(f"/openfal/utils/echo?fal_webhook={quote('https://bücher.example/hook')}", json={}, headers=auth)
    assert response.status_code == 200, response.text


async def test_a_webhook_is_sent_when_its_request_ends_not_at_the_next_poll(tmp_path, monkeypatch) -> None:
    """Ending a request that has a webhook wakes the deliverer: with its poll and its
    idle wait made an hour long, the webhook still arrives."""
    from openfal import webhooks

    monkeypatch.setattr(webhooks, "POLL_SECONDS", 3600.0)
    monkeypatch.setattr(webhooks, "IDLE_SECONDS", 3600.0)
    receiver = Receiver()
    try:
        async with running_app(make_settings(tmp_path, auth_enabled=False)) as app:
            body = (await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(receiver.url)}", json={})).json()
            await _outbox_row_in_state(app, body["request_id"], "delivered")
            assert len(receiver.received) == 1
    finally:
        receiver.close()
