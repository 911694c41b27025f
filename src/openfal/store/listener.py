"""The store's change feed across processes: what other processes committed reaches
this one's status views (store/views.py) and its ``Notifier``.

PostgreSQL: every commit's notices (store/changes.py) arrive on ``LISTEN openfal``
and are applied here as their sender applied them. Every process listens on one
dedicated connection. While it is connected the views are *live*; when it drops they are not,
and every status read goes to the database until it is back (polling is the
fallback).

SQLite has no notifications, but ``PRAGMA data_version`` on the connection this
process writes with changes exactly when another connection (another process)
committed: checked every ``poll_interval_seconds``, a change drops every pending
view and wakes every waiter. This process's own commits reach the views directly."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from openfal.notify import Notifier
from openfal.store.changes import CHANNEL, Notice, apply
from openfal.store.db import Database
from openfal.store.views import StatusCache

log = logging.getLogger("openfal.listener")

RECONNECT_SECONDS = 2.0


class PgListener:
    def __init__(self, database_url: str, notifier: Notifier, views: StatusCache | None = None) -> None:
        self.dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.notifier = notifier
        self.views = views or StatusCache()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def _run(self) -> None:
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.dsn)
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self.views.set_live(True)  # what committed before LISTEN may have been missed
                self.notifier.everything_changed()
                self.notifier.webhooks_queued()
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
        origin, notice = Notice.parse(payload)
        if origin != self.views.origin:  # this process's own were applied when it committed
            apply(notice, self.views, self.notifier)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class SqliteWatcher:
    """Another process committed to the SQLite file: what this one keeps is dropped."""

    def __init__(self, db: Database, notifier: Notifier, views: StatusCache, interval: float) -> None:
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
                        self.notifier.webhooks_queued()  # or ended a request that has a webhook
                    seen = version
                await asyncio.sleep(self.interval)
        finally:
            self.views.set_live(False)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


ChangeFeed = PgListener | SqliteWatcher


def change_feed(db: Database, notifier: Notifier, views: StatusCache, *, database_url: str, interval: float) -> ChangeFeed:
    """The feed for this database, not yet started."""
    if db.is_sqlite:
        return SqliteWatcher(db, notifier, views, interval)
    return PgListener(database_url, notifier, views)
