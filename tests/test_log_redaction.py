"""No secret reaches a log line (N8: uvicorn logged each realtime handshake with its
``?fal_jwt_token=``): the record factory redacts every record as it is made, whatever
logger made it. The lines below are the calls uvicorn and openfal make."""

from __future__ import annotations

import logging

import pytest

from openfal import log_redaction
from openfal.realtime import RealtimeTokens

TOKEN = RealtimeTokens(b"s" * 32).issue("key1", ["flux-1"], 60)


@pytest.fixture(autouse=True)
def installed() -> None:
    log_redaction.install()


def test_uvicorns_websocket_handshake_line_carries_no_realtime_token(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', ("127.0.0.1", 5), f"/fal-ai/flux-1/schnell/realtime?fal_jwt_token={TOKEN}&max_buffering=2")
    line = caplog.records[-1].getMessage()
    assert TOKEN not in line and TOKEN.split(".")[1] not in line
    assert "fal_jwt_token=[redacted]&max_buffering=2" in line


def test_an_access_log_line_of_an_upload_ticket_carries_no_ticket(caplog: pytest.LogCaptureFixture) -> None:
    ticket = "oftkt.eyJrIjoiYSJ9.0123456789abcdef"
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "PUT", f"/storage/upload/put/{ticket}", "1.1", 200)
    assert "eyJrIjoiYSJ9" not in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    "secret_url",
    [
        "https://bucket.s3.amazonaws.com/a.safetensors?X-Amz-Credential=AKIA123%2F2026&X-Amz-Signature=deadbeef",
        "https://storage.googleapis.com/b/a?X-Goog-Signature=deadbeef&X-Goog-Credential=AKIA123",
    ],
)
def test_a_signed_urls_signature_and_credential_are_redacted(caplog: pytest.LogCaptureFixture, secret_url: str) -> None:
    with caplog.at_level(logging.INFO, logger="openfal.local"):
        logging.getLogger("openfal.local").info("LoRA %s downloaded", secret_url)
    line = caplog.records[-1].getMessage()
    assert "deadbeef" not in line and "AKIA123" not in line


def test_an_authorization_value_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="openfal.http"):
        logging.getLogger("openfal.http").info("refused Authorization: Key 0123abcd:sEcReTsEcReT")
    assert "sEcReT" not in caplog.records[-1].getMessage()
