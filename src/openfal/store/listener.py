"""The store's change feed across processes: what other processes committed reaches
this one's status views (store/views.py) and its ``Notifier``.

PostgreSQL: writers send ``NOTIFY openfal`` with ``work:<backend>`` (a request was
queued), ``queue:<backend>`` (requests left the queue: claimed, cancelled),
``changed:<id>[,<id>...]`` (a request's status, logs or progress changed) or
``cancel:<id>``, each followed by a space and a JSON object: the sending process's
``o`` (its own notifications are skipped: it applied them at commit) and, for queues,
the requests added (``add``) or removed (``rm``) and the claim's ``turn``, which
snapshots of that queue take in place. Every process listens on one dedicated
connection. While it is connected the views are *live*; when it drops they are not,
and every status read goes to the database until it is back (polling is the
fallback).

SQLite has no notifications, but ``PRAGMA data_version`` on the connection this
process writes with changes exactly when another connection (another process)
committed: checked every ``poll_interval_seconds``, a change drops every pending
view and wakes every waiter. This process's own commits reach the views directly."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.notify import Notifier
from openfal.store.db import Database
from openfal.store.views import QueueSnapshot, StatusViews

log = logging.getLogger("openfal.listener")

CHANNEL = "openfal"
RECONNECT_SECONDS = 2.0


async def notify(conn: AsyncConnection, payload: str) -> None:
    """Queue a notification; PostgreSQL delivers it when the transaction commits."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


class PgListener:
    def __init__(self, database_url: str, notifier: Notifier, views: StatusViews | None = None) -> None:
        self.dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.notifier = notifier
        self.views = views or StatusViews()
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
                self.views.set_live(True)  # what committed before LISTEN may have been missed
                self.notifier.everything_changed()
                try:
                    await lost.wait()
                finally:
                    self.views.set_live(False)
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed (%s); polling until it is back", exc)
            self.views.set_live(False)
            await asyncio.sleep(RECONNECT_SECONDS)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        value, _, extra = rest.partition(" ")
        delta: dict[str, Any] = json.loads(extra) if extra else {}
        if delta.get("o") == self.views.origin:
            return  # this process's own commit, applied when it was made
        if kind in {"work", "queue"}:
            self.views.queue_changed(value, _apply(delta) if "add" in delta or "rm" in delta else None)
            self.notifier.queue_changed(value)
            if kind == "work":
                self.notifier.work_available()
        elif kind == "changed":
            for request_id in value.split(","):
                self.views.changed(request_id)
                self.notifier.changed(request_id)
        elif kind == "cancel":
            self.views.changed(value)
            self.notifier.cancel(value)
            self.notifier.changed(value)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _apply(delta: dict[str, Any]) -> Callable[[QueueSnapshot], None]:
    """Another process's queue change, for this process's snapshot of that queue."""

    def apply(snap: QueueSnapshot) -> None:
        for seq, priority, key, created in delta.get("add", ()):
            snap.add(priority, key, seq, created)
        for seq, priority, key, _created in delta.get("rm", ()):
            snap.remove(priority, key, seq, turn=delta.get("turn"))

    return apply


class SqliteWatcher:
    """Another process committed to the SQLite file: what this one keeps is dropped."""

    def __init__(self, db: Database, notifier: Notifier, views: StatusViews, interval: float) -> None:
        self.db = db
        self.notifier = notifier
        self.views = views
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sqlite-watcher")

    async def _run(self) -> None:
        seen: int | None = None
        try:
            while True:
                try:
                    version = await self.db.data_version()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("reading SQLite's data_version failed (%s); polling until it works", exc)
                    seen = None
                    if self.views.live:
                        self.views.set_live(False)
                else:
                    if seen is None:
                        self.views.set_live(True)
                    elif version != seen:
                        self.views.everything_changed()
                        self.notifier.everything_changed()
                        self.notifier.work_available()  # another process may have queued some
                    seen = version
                await asyncio.sleep(self.interval)
        finally:
            self.views.set_live(False)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


ChangeFeed = PgListener | SqliteWatcher


def change_feed(db: Database, notifier: Notifier, views: StatusViews, *, database_url: str, interval: float) -> ChangeFeed:
    """The feed for this database, not yet started."""
    if db.is_sqlite:
        return SqliteWatcher(db, notifier, views, interval)
    return PgListener(database_url, notifier, views)
