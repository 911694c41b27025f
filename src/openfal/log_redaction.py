"""Nothing secret reaches a log line: realtime tokens, upload tokens and tickets, signed
URLs' signatures and credentials, ``Authorization`` values.

Secrets travel where loggers we do not own print them: uvicorn logs every WebSocket
handshake with its query string (``?fal_jwt_token=`` is how fal's clients authenticate
realtime), and its access log prints upload URLs whose path is a signed ticket. So the
redaction is at the one place every record passes: the log record factory, which
rewrites a record's message and arguments as it is made, whichever logger, handler or
format then prints it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"
#: openfal's own signed tokens and tickets (realtime, CDN upload, upload URL)
_OWN_TOKENS = re.compile(r"\b(ofrt|oftok|oftkt)\.[A-Za-z0-9_\-]+\.[0-9a-f]+")
#: query parameters that carry a credential: fal's realtime token, S3 and other
#: presigned URLs' signatures and credentials
_SECRET_PARAMS = re.compile(
    r"(?i)([?&](?:fal_jwt_token|token|access_token|signature|sig|x-amz-signature|x-amz-credential|x-amz-security-token"
    r"|x-goog-signature|x-goog-credential)=)[^&\s\"'#]+"
)
#: an Authorization value: openfal keys (``id:secret``) and bearer tokens
_AUTHORIZATION = re.compile(r"(?i)\b(key|bearer|basic)\s+[A-Za-z0-9._~+/=:-]{8,}")


def redact(text: str) -> str:
    """``text`` with every secret this module knows the shape of replaced."""
    text = _OWN_TOKENS.sub(lambda m: f"{m.group(1)}.{REDACTED}", text)
    text = _SECRET_PARAMS.sub(lambda m: m.group(1) + REDACTED, text)
    return _AUTHORIZATION.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


_installed = False


def install() -> None:
    """Redact every log record made from now on in this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redacted(v) for k, v in record.args.items()}
        return record

    logging.setLogRecordFactory(factory)
