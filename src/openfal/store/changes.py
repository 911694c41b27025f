"""What a write transaction changed, and the one way it is told.

Every store write runs in a ``Transaction``. The store's methods add a ``Notice`` for
each change as they make it; when the transaction commits, PostgreSQL delivers the
notices to every other process (``pg_notify`` inside the transaction, so a rollback
sends nothing; a submit's statement sends its own, see ``Transaction.sent``) and this
process applies them itself, right after the commit, to its status views and its
``Notifier``. The listener applies other processes' notices with
the same ``apply``, so a change reaches a waiter the same way wherever it was made.

Kinds: ``work:<backend>`` (requests were queued, ``add``), ``queue:<backend>``
(requests left the queue, ``rm``, and the claim's ``turn``), ``changed:<id>[,<id>]``
(status, logs or progress), ``cancel:<id>`` (a running request was asked to stop)
and ``webhook:<id>`` (a delivery is due: a request with a webhook ended, or a
delivery was sent again).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.notify import Notifier
from openfal.store.db import Database
from openfal.store.views import QueueSnapshot, StatusCache

CHANNEL = "openfal"
#: stands for a new request's seq in a payload its own INSERT sends (see submit_statements.py)
SEQ_PLACEHOLDER = "@seq"
#: a transaction's notices in one round trip, in order (unnest scans the array in order)
_NOTIFY = sa.text("SELECT pg_notify(:channel, payload) FROM unnest(:payloads) AS payload").bindparams(
    sa.bindparam("payloads", type_=postgresql.ARRAY(sa.Text))
)


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str
    value: str
    #: for queues: the requests added or removed (``[seq, priority, key, created]``)
    #: and the claim's ``turn``, which snapshots take in place
    delta: dict[str, Any] = field(default_factory=dict)

    def payload(self, origin: str) -> str:
        """As sent to other processes: with the sender's ``o``, so its own come back
        to it and are skipped (it applied them at commit)."""
        return f"{self.kind}:{self.value} {json.dumps({'o': origin, **self.delta}, separators=(',', ':'))}"

    @classmethod
    def parse(cls, payload: str) -> tuple[str | None, Notice]:
        """(sending process, notice) from a payload."""
        kind, _, rest = payload.partition(":")
        value, _, extra = rest.partition(" ")
        delta: dict[str, Any] = json.loads(extra) if extra else {}
        return delta.pop("o", None), cls(kind, value, delta)


def apply(notice: Notice, views: StatusCache, notifier: Notifier) -> None:
    """A committed change, to what this process keeps in memory and whoever waits."""
    kind, value, delta = notice.kind, notice.value, notice.delta
    if kind in {"work", "queue"}:
        views.queue_changed(value, _snapshot_change(delta) if "add" in delta or "rm" in delta else None)
        notifier.queue_changed(value)
        if kind == "work":
            notifier.work_available()
    elif kind == "changed":
        for request_id in value.split(","):
            views.changed(request_id)
            notifier.changed(request_id)
    elif kind == "cancel":
        views.changed(value)
        notifier.cancel(value)
        notifier.changed(value)
    elif kind == "webhook":
        notifier.webhooks_queued()


def _snapshot_change(delta: dict[str, Any]) -> Callable[[QueueSnapshot], None]:
    def change(snap: QueueSnapshot) -> None:
        for seq, priority, key, created in delta.get("add", ()):
            snap.add(priority, key, seq, created)
        for seq, priority, key, _created in delta.get("rm", ()):
            snap.remove(priority, key, seq, turn=delta.get("turn"))

    return change


class Transaction:
    """One write transaction: its connection, and what to tell once it commits."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        #: sent by a statement of the transaction itself (its own ``pg_notify``)
        self.told: list[Notice] = []
        self.notices: list[Notice] = []
        self.steps: list[Callable[[], None]] = []

    def notice(self, kind: str, value: str, **delta: Any) -> None:
        self.notices.append(Notice(kind, value, delta))

    def sent(self, notice: Notice) -> None:
        """A notice a statement of this transaction sent to other processes itself; it is
        applied here at commit like the rest. PostgreSQL delivers in the order of the
        ``pg_notify`` calls, so these go before the ones sent at commit, here as there."""
        self.told.append(notice)

    def after_commit(self, step: Callable[[], None]) -> None:
        """Run once the transaction has committed (after its notices are applied)."""
        self.steps.append(step)


class Transactions:
    """Opens write transactions for the stores of one process, and tells what they
    changed: to other processes as they commit, to this one right after."""

    def __init__(self, db: Database, views: StatusCache, notifier: Notifier) -> None:
        self.db = db
        self.views = views
        self.notifier = notifier

    @asynccontextmanager
    async def begin(self, tx: Transaction | None = None, *, one_statement: bool = False, claim: bool = False) -> AsyncIterator[Transaction]:
        """A new transaction, or, given the caller's, that one (its caller commits it
        and its notices are told then). ``one_statement``: the block runs a single
        statement that sends its own notices, in autocommit on PostgreSQL; ``claim``:
        a queue claim's (see ``Database.write``)."""
        if tx is not None:
            yield tx
            return
        async with self.db.write(autocommit=one_statement, claim=claim) as conn:
            tx = Transaction(conn)
            yield tx
            if tx.notices and conn.dialect.name == "postgresql":
                assert not one_statement, "a single statement sends its own notices"
                payloads = [notice.payload(self.views.origin) for notice in tx.notices]
                await conn.execute(_NOTIFY, {"channel": CHANNEL, "payloads": payloads})
        for notice in (*tx.told, *tx.notices):
            apply(notice, self.views, self.notifier)
        for step in tx.steps:
            step()
