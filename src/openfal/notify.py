"""In-process wake-ups: a request changed, work arrived, a cancel was asked for.

Other processes learn the same things by polling the store at
``poll_interval_seconds``; these events only make the common one-process case instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from openfal.aio import wait_event


class Notifier:
    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = {}
        self._work = asyncio.Event()
        self._cancel_hooks: dict[str, Callable[[], None]] = {}

    def changed(self, request_id: str) -> None:
        event = self._changed.pop(request_id, None)
        if event is not None:
            event.set()

    async def wait_changed(self, request_id: str, timeout: float) -> None:
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
