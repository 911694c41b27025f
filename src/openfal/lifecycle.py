"""Ending a request, the one way: a compare-and-swap to COMPLETED, and in the same
transaction whatever must happen exactly once with it (the webhook delivery row).
The worker, the reaper and cancel all end requests through here."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from openfal import metrics
from openfal.accounting import Accounts
from openfal.errors import RunError
from openfal.models import RequestRecord, Status
from openfal.notify import Notifier
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


class Lifecycle:
    def __init__(self, store: RequestStore, notifier: Notifier, accounts: Accounts) -> None:
        self.store = store
        self.notifier = notifier
        self.accounts = accounts
        #: called once a request that has a webhook has ended (its outbox row committed):
        #: the runtime points it at its deliverer, which then sends it without waiting to poll
        self.webhook_enqueued: Callable[[], None] = lambda: None

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
        done = await self.store.complete(
            record,
            result_status=200,
            result_body=body,
            inference_time=inference_time,
            worker_id=worker_id,
            attempt=attempt,
            also=self._after(video_seconds),
        )
        return self._announce(record, done)

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
        done = await self.store.complete(
            record,
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
            also=self._after(),
        )
        return self._announce(record, done)

    def _announce(self, record: RequestRecord, done: RequestRecord | None) -> RequestRecord | None:
        self.notifier.changed(record.id)
        if done is not None:
            metrics.record_completion(done)
            if done.webhook_url:
                self.webhook_enqueued()
        return done

    def _after(self, video_seconds: float = 0.0) -> Callable[[AsyncConnection, RequestRecord], Awaitable[None]]:
        """What happens exactly once with the move to COMPLETED: settlement, webhook."""

        async def after(conn: AsyncConnection, record: RequestRecord) -> None:
            await self.accounts.settle(conn, record, video_seconds=video_seconds)
            if record.webhook_url:
                await outbox.enqueue(conn, request_id=record.id, url=record.webhook_url, body=webhook_body(record))

        return after
