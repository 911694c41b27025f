"""In-process wake-ups: a request changed, a backend's queue changed (positions
moved), work arrived, a cancel was asked for, a webhook delivery was queued.

The store signals its own commits here; changes made by other processes arrive
through the store's change feed (PostgreSQL LISTEN/NOTIFY, SQLite's data version),
and where there is none, waiters poll the store at ``poll_interval_seconds``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from openfal.aio import wait_event

#: queue changes wake the followers of a backend's queued requests at most this often:
#: on a busy backend every claim moves every position, and a stream need not say so
#: more often than a poller would see it
QUEUE_WAKE_SECONDS = 0.25


class Notifier:
    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = {}
        #: backend -> requests whose waiters also wake when its queue changes
        self._queue_waiters: dict[str, set[str]] = {}
        #: backend -> when its queue waiters were last woken, and the wake scheduled since
        self._queue_woken: dict[str, float] = {}
        self._queue_due: dict[str, asyncio.TimerHandle] = {}
        self._work = asyncio.Event()
        self._cancel_hooks: dict[str, Callable[[], None]] = {}
        self._webhook_hooks: list[Callable[[], None]] = []
        self._work_hooks: list[Callable[[], None]] = []

    def changed(self, request_id: str) -> None:
        event = self._changed.pop(request_id, None)
        if event is not None:
            event.set()

    def queue_changed(self, backend: str) -> None:
        """Requests were queued, claimed or cancelled on ``backend``: positions moved.
        Its waiters wake now, or, if they were woken less than ``QUEUE_WAKE_SECONDS``
        ago, once that much time has passed (one wake for every change until then)."""
        if backend in self._queue_due or backend not in self._queue_waiters:
            return
        loop = asyncio.get_running_loop()
        wait = self._queue_woken.get(backend, float("-inf")) + QUEUE_WAKE_SECONDS - loop.time()
        if wait <= 0:
            self._wake_queue(backend)
        else:
            self._queue_due[backend] = loop.call_later(wait, self._wake_queue, backend)

    def _wake_queue(self, backend: str) -> None:
        self._queue_due.pop(backend, None)
        self._queue_woken[backend] = asyncio.get_running_loop().time()
        for request_id in self._queue_waiters.pop(backend, ()):
            self.changed(request_id)

    def everything_changed(self) -> None:
        """Changes may have been missed (another process wrote, a feed reconnected)."""
        self._queue_waiters.clear()
        for request_id in list(self._changed):
            self.changed(request_id)

    def watch(self, request_id: str, *, queue: str | None = None) -> asyncio.Event:
        """An event set by the request's next change (or, with ``queue``, its backend's
        queue's). Take it *before* reading the state it guards, then wait on it: a
        change landing between the read and the wait is not lost."""
        if queue is not None:
            self._queue_waiters.setdefault(queue, set()).add(request_id)
        return self._changed.setdefault(request_id, asyncio.Event())

    async def wait_changed(self, request_id: str, timeout: float, *, queue: str | None = None) -> None:
        """Until the request changes (or, with ``queue``, that backend's queue does)."""
        await wait_event(self.watch(request_id, queue=queue), timeout)

    def work_available(self) -> None:
        self._work.set()
        for hook in self._work_hooks:
            hook()

    def on_work(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` too whenever work arrives (the reaper: a new request may carry a
        start deadline)."""
        self._work_hooks.append(hook)

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

    def on_webhooks(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` whenever webhook deliveries were queued (the deliverer's wake)."""
        self._webhook_hooks.append(hook)

    def webhooks_queued(self) -> None:
        for hook in self._webhook_hooks:
            hook()
