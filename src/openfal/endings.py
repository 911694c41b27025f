"""Ending a request, the one way: a compare-and-swap to COMPLETED, and in the same
transaction whatever must happen exactly once with it (the webhook delivery row).
The worker, the reaper and cancel all end requests through here."""

from __future__ import annotations

import json
from typing import Any

from openfal import metrics
from openfal.accounting import Accounts
from openfal.errors import RunError
from openfal.models import RequestRecord, Status
from openfal.store import outbox
from openfal.store.requests import RequestStore


def webhook_body(record: RequestRecord) -> str:
    """fal's webhook payload for a completed request."""
    ok = record.error is None
    body: dict[str, Any] = {
        "request_id": record.id,
        "gateway_request_id": record.id,
        "status": "OK" if ok else "ERROR",
        "payload": record.result_body,
    }
    if not ok:
        body["error"] = f"Invalid status code: {record.result_status}"
    try:
        return json.dumps(body)
    except (TypeError, ValueError) as exc:
        body["payload"], body["payload_error"] = None, f"payload is not JSON serialisable: {exc}"
        return json.dumps(body)


def _number(units: float) -> str:
    """A header value fal-js parses as a number: ``2``, ``1.048``."""
    return f"{units:.6f}".rstrip("0").rstrip(".") or "0"


class Endings:
    """Every way a request ends (succeed, fail, cancel) goes through `_end`: one
    transaction, one compare-and-swap. Not to be confused with a file's retention
    (media/retention.MediaLifecycle, fal's "object lifecycle")."""

    def __init__(self, store: RequestStore, accounts: Accounts) -> None:
        self.store = store
        self.accounts = accounts

    async def succeed(
        self,
        record: RequestRecord,
        body: dict[str, Any],
        *,
        inference_time: float | None,
        worker_id: str,
        attempt: int,
        video_seconds: float = 0.0,
    ) -> RequestRecord | None:
        units = self.accounts.billable_units(record.endpoint_id, body, video_seconds)
        return await self._end(
            record,
            video_seconds,
            result_status=200,
            result_body=body,
            result_headers={"x-fal-billable-units": _number(units)},
            inference_time=inference_time,
            worker_id=worker_id,
            attempt=attempt,
        )

    async def fail(
        self,
        record: RequestRecord,
        error: RunError,
        *,
        expect: Status = Status.IN_PROGRESS,
        worker_id: str | None = None,
        attempt: int | None = None,
        inference_time: float | None = None,
        lease_expired_before: float | None = None,
    ) -> RequestRecord | None:
        return await self._end(
            record,
            0.0,
            result_status=error.status_code,
            result_body=error.body(),
            result_headers=error.headers(),
            error=error.message,
            error_type=error.error_type,
            inference_time=inference_time,
            expect=expect,
            worker_id=worker_id,
            attempt=attempt,
            lease_expired_before=lease_expired_before,
        )

    async def _end(self, record: RequestRecord, video_seconds: float, **ending: Any) -> RequestRecord | None:
        """The move to COMPLETED and, exactly once with it, settlement and the webhook."""
        async with self.store.transaction() as tx:
            done = await self.store.complete(record, tx=tx, **ending)
            if done is not None:
                await self.accounts.settle(tx, done, video_seconds=video_seconds)
                if done.webhook_url:
                    await outbox.enqueue(tx, request_id=done.id, url=done.webhook_url, body=webhook_body(done))
        if done is not None:
            metrics.record_completion(done)
        return done
