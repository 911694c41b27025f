"""A submit's writes: the credit reserve against its key's balance, the reserve's
ledger row, the request itself and, on PostgreSQL, the notice that tells other
processes of it.

On PostgreSQL they are one statement: data-modifying CTEs, the request and the ledger
row inserted only if the balance took the reserve, ``pg_notify`` in its SELECT (with
the new request's seq put into the payload there). A submit without per-key limits
then runs it in autocommit: one round trip, where BEGIN, three statements, the notify
and COMMIT took six, 60% of an API process's CPU per submit. SQLite has no
data-modifying CTEs and no round trips to save: it runs them in turn in its write
transaction.

Statements are built once per set of request columns (the store's callers give the
same few sets) and found in SQLAlchemy's compiled cache after that.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.store.changes import SEQ_PLACEHOLDER
from openfal.store.schema import api_keys, ledger, requests

_BALANCE = api_keys.c.balance_micros
_AMOUNT = sa.bindparam("amount", type_=sa.BigInteger())
#: a key's balance takes the reserve if it covers it (metered-only keys, None, always do)
_RESERVE = (
    api_keys.update()
    .where(api_keys.c.id == sa.bindparam("k_id"), sa.or_(_BALANCE.is_(None), _BALANCE >= _AMOUNT))
    .values(balance_micros=_BALANCE - _AMOUNT)
)
_LEDGER_COLUMNS = tuple(c.name for c in ledger.c if c.name != "id")


class NotCovered(Exception):
    """The key's balance does not cover the reserve; nothing was written."""


def _charge(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """``_RESERVE``'s values when the reserve is taken from a key's balance: a keyed,
    priced request (a free one, or one without a key, only gets its ledger row)."""
    if entry is None or entry["key_id"] is None or not entry["amount_micros"]:
        return None
    return {"k_id": entry["key_id"], "amount": -entry["amount_micros"]}


class SubmitStatements:
    def __init__(self, *, sqlite: bool) -> None:
        self.sqlite = sqlite
        self._insert_returning = requests.insert().returning(*requests.c)
        self._ledger_insert = ledger.insert()
        #: (request columns, reserves against a balance, writes a ledger row) -> statement
        self._combined: dict[tuple[tuple[str, ...], bool, bool], Any] = {}

    async def run(self, conn: AsyncConnection, row: dict[str, Any], entry: dict[str, Any] | None, *, notify: dict[str, str] | None) -> sa.Row[Any]:
        """The request's row as stored. ``entry``: the reserve's ledger row (None: none),
        its amount taken from its key's balance (NotCovered when the balance is short);
        ``notify``: PostgreSQL's ``channel`` and ``payload`` (SQLite sends none)."""
        charge = _charge(entry)
        if self.sqlite:
            return await self._in_turn(conn, row, entry, charge)
        assert notify is not None, "PostgreSQL's submit tells other processes of it"
        statement = self._statement(tuple(row), charged=charge is not None, with_entry=entry is not None)
        values = {f"r_{name}": value for name, value in row.items()} | notify | (charge or {})
        if entry is not None:
            values |= {f"l_{name}": entry[name] for name in _LEDGER_COLUMNS}
        stored = (await conn.execute(statement, values)).one_or_none()
        if stored is None:
            raise NotCovered()
        return stored

    async def _in_turn(
        self, conn: AsyncConnection, row: dict[str, Any], entry: dict[str, Any] | None, charge: dict[str, Any] | None
    ) -> sa.Row[Any]:
        if charge is not None and (await conn.execute(_RESERVE, charge)).rowcount == 0:
            raise NotCovered()
        if entry is not None:
            await conn.execute(self._ledger_insert, entry)
        return (await conn.execute(self._insert_returning, row)).one()

    def _statement(self, columns: tuple[str, ...], *, charged: bool, with_entry: bool) -> Any:
        built = self._combined.get((columns, charged, with_entry))
        if built is None:
            built = self._combined[(columns, charged, with_entry)] = _combined(columns, charged=charged, with_entry=with_entry)
        return built


def _combined(columns: tuple[str, ...], *, charged: bool, with_entry: bool) -> Any:
    gate = _RESERVE.returning(api_keys.c.id).cte("reserve") if charged else None

    def source(table: sa.Table, names: tuple[str, ...], prefix: str) -> sa.Select[Any]:
        chosen = sa.select(*(sa.bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in names))
        return chosen.select_from(gate) if gate is not None else chosen

    stored = requests.insert().from_select(columns, source(requests, columns, "r_")).returning(*requests.c).cte("stored")
    payload = sa.func.replace(sa.bindparam("payload", type_=sa.Text()), f'"{SEQ_PLACEHOLDER}"', sa.cast(stored.c.seq, sa.Text))
    statement = sa.select(stored, sa.func.pg_notify(sa.bindparam("channel", type_=sa.Text()), payload).label("notified"))
    if with_entry:
        statement = statement.add_cte(ledger.insert().from_select(_LEDGER_COLUMNS, source(ledger, _LEDGER_COLUMNS, "l_")).cte("entry"))
    return statement
