"""PostgreSQL LISTEN/NOTIFY: wake-ups across processes and machines.

Writers send ``NOTIFY openfal`` with ``work:<backend>`` (a request was queued),
``changed:<id>`` (a request's status, logs or progress changed) or ``cancel:<id>``;
every process listens on one dedicated connection and turns them into in-process
``Notifier`` events. Polling stays as the fallback, so a lost notification or a
dropped listener connection only costs latency."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.notify import Notifier

log = logging.getLogger("openfal.listener")

CHANNEL = "openfal"
RECONNECT_SECONDS = 2.0


async def notify(conn: AsyncConnection, payload: str) -> None:
    """Queue a notification; PostgreSQL delivers it when the transaction commits."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


class PgListener:
    def __init__(self, database_url: str, notifier: Notifier) -> None:
        self.dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.notifier = notifier
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def _run(self) -> None:
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.dsn)
                conn.add_termination_listener(lambda _: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                try:
                    await lost.wait()
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed (%s); polling until it is back", exc)
            await asyncio.sleep(RECONNECT_SECONDS)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "work":
            self.notifier.work_available()
        elif kind == "changed":
            self.notifier.changed(value)
        elif kind == "cancel":
            self.notifier.cancel(value)
            self.notifier.changed(value)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
