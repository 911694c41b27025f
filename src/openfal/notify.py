"""In-process wake-ups: a request changed, a backend's queue changed (positions
moved), work arrived, a cancel was asked for.

The store signals its own commits here; changes made by other processes arrive
through the store's change feed (PostgreSQL LISTEN/NOTIFY, SQLite's data version),
and where there is none, waiters poll the store at ``poll_interval_seconds``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from openfal.aio import wait_event


class Notifier:
    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = {}
        #: backend -> requests whose waiters also wake when its queue changes
        self._queue_waiters: dict[str, set[str]] = {}
        self._work = asyncio.Event()
        self._cancel_hooks: dict[str, Callable[[], None]] = {}

    def changed(self, request_id: str) -> None:
        event = self._changed.pop(request_id, None)
        if event is not None:
            event.set()

    def queue_changed(self, backend: str) -> None:
        """Requests were queued, claimed or cancelled on ``backend``: positions moved."""
        for request_id in self._queue_waiters.pop(backend, ()):
            self.changed(request_id)

    def everything_changed(self) -> None:
        """Changes may have been missed (another process wrote, a feed reconnected)."""
        self._queue_waiters.clear()
        for request_id in list(self._changed):
            self.changed(request_id)

    async def wait_changed(self, request_id: str, timeout: float, *, queue: str | None = None) -> None:
        """Until the request changes (or, with ``queue``, that backend's queue does)."""
        if queue is not None:
            self._queue_waiters.setdefault(queue, set()).add(request_id)
        await wait_event(self._changed.setdefault(request_id, asyncio.Event()), timeout)

    def work_available(self) -> None:
        self._work.set()

    async def wait_work(self, timeout: float) -> None:
        await wait_event(self._work, timeout)
        self._work.clear()

    def on_cancel(self, request_id: str, hook: Callable[[], None]) -> None:
        self._cancel_hooks[request_id] = hook

    def forget_cancel(self, request_id: str) -> None:
        self._cancel_hooks.pop(request_id, None)

    def cancel(self, request_id: str) -> None:
        hook = self._cancel_hooks.get(request_id)
        if hook is not None:
            hook()
