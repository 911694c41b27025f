"""The rollup of the ledger's charge rows (``charge_rollup``): one cell per UTC day and
one per hour, per endpoint, key and billing unit, with exact counts and sums and
log-histograms of queue waits and run times (``openfal.loghist``). A report reads days
where its buckets hold whole UTC days, hours where they hold whole hours, raw rows for
the rest (store/reports.py). The reaper rolls the rows not rolled up
yet (``roll``) a batch per transaction: the cells grow and the rows are marked in the
same commit, so a report that reads the cells and the unmarked rows in one statement
counts every charge row exactly once, however far behind the reaper is.

Several reapers at once take turns: on PostgreSQL a transaction-scoped advisory lock
(another reaper's turn is skipped, not waited for), on SQLite the one writer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from openfal import loghist
from openfal.store.db import Database
from openfal.store.schema import charge_rollup, ledger

_L = ledger.c
_H = charge_rollup.c
HOUR = 3600.0
DAY = 86400.0
#: the cells' lengths, longest first (each a multiple of the next)
SPANS = (DAY, HOUR)
#: charge rows not rolled up, spelled as ix_ledger_unrolled's predicate (a bound value
#: would not match it in a generic plan)
UNROLLED = sa.text("ledger.kind = 'charge' AND NOT ledger.rolled_up")
#: rows per transaction, and transactions per ``roll`` (a backlog, e.g. after the
#: upgrade that added the rollup, is worked off over several sweeps)
BATCH = 5000
MAX_BATCHES = 20
#: the advisory lock a PostgreSQL roll holds (any constant unique to this job)
_LOCK = 0x0F_A1_C4A2


def start_of(moment: float, span: float) -> float:
    """The start of the ``span``-long cell holding ``moment``."""
    return float(int(moment // span)) * span


@dataclass(slots=True)
class Cell:
    """Charge rows added up: from cells (their histograms) and raw rows (their values)
    alike, so a report folds both the same way."""

    request_count: int = 0
    success_count: int = 0
    user_error_count: int = 0
    error_count: int = 0
    ok_count: int = 0
    ok_units: float = 0.0
    ok_cost_micros: int = 0
    queue_hists: list[bytes] = field(default_factory=list)
    run_hists: list[bytes] = field(default_factory=list)
    queue_values: list[float] = field(default_factory=list)
    run_values: list[float] = field(default_factory=list)

    def add_charge(self, status_code: int | None, outcome: str | None, units: float | None, amount_micros: int, queued: float | None, ran: float | None) -> None:
        """One charge row (status 2xx/3xx success, 4xx user error, 5xx error; ``ok``
        outcome: it delivered, so it is billed)."""
        code = status_code or 200
        self.request_count += 1
        if code < 400:
            self.success_count += 1
        elif code < 500:
            self.user_error_count += 1
        else:
            self.error_count += 1
        if outcome == "ok":
            self.ok_count += 1
            self.ok_units += float(units or 0.0)
            self.ok_cost_micros -= int(amount_micros)
        if queued is not None:
            self.queue_values.append(queued)
        if ran is not None:
            self.run_values.append(ran)

    def add_cell(self, row: Any) -> None:
        """A ``charge_rollup`` row."""
        self.request_count += int(row.request_count)
        self.success_count += int(row.success_count)
        self.user_error_count += int(row.user_error_count)
        self.error_count += int(row.error_count)
        self.ok_count += int(row.ok_count)
        self.ok_units += float(row.ok_units)
        self.ok_cost_micros += int(row.ok_cost_micros)
        if row.queue_hist:
            self.queue_hists.append(row.queue_hist)
        if row.run_hist:
            self.run_hists.append(row.run_hist)

    def histograms(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Queue-wait and run-time histograms, as loghist's bins and counts."""
        return _histogram(self.queue_hists, self.queue_values), _histogram(self.run_hists, self.run_values)

    def columns(self) -> dict[str, Any]:
        """The cell's ``charge_rollup`` values, histograms merged."""
        (qb, qc), (rb, rc) = self.histograms()
        return {
            "request_count": self.request_count,
            "success_count": self.success_count,
            "user_error_count": self.user_error_count,
            "error_count": self.error_count,
            "ok_count": self.ok_count,
            "ok_units": self.ok_units,
            "ok_cost_micros": self.ok_cost_micros,
            "queue_hist": loghist.encode(qb, qc),
            "run_hist": loghist.encode(rb, rc),
        }


def _histogram(blobs: Sequence[bytes], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    bins, counts = loghist.decode(blobs)
    if values:
        bins = np.concatenate((bins, loghist.bins_of(values)))
        counts = np.concatenate((counts, np.ones(len(values), dtype=np.int64)))
    return bins, counts


#: a cell's identity: span, start, endpoint ('' none), key ('' none), unit
CellKey = tuple[float, float, str, str, str]

_UNROLLED_ROWS = (
    sa.select(_L.id, _L.created_at, _L.endpoint_id, _L.key_id, _L.unit, _L.status_code, _L.outcome, _L.units, _L.amount_micros, _L.queue_seconds, _L.run_seconds)
    .where(UNROLLED)
    .order_by(_L.created_at)
    .limit(sa.bindparam("batch"))
)
_MARK = ledger.update().where(_L.id.in_(sa.bindparam("ids", expanding=True))).values(rolled_up=True)
#: the SET clause is the parameters' column names (Cell.columns)
_GROW = charge_rollup.update().where(_H.id == sa.bindparam("cell_id"))


def fold_rows(rows: Iterable[Any]) -> dict[CellKey, Cell]:
    """Charge rows (created_at, endpoint_id, key_id, unit, status_code, outcome, units,
    amount_micros, queue_seconds, run_seconds) added up into their days' and hours'
    cells."""
    cells: dict[CellKey, Cell] = {}
    for row in rows:
        for span in SPANS:
            key = (span, start_of(row.created_at, span), row.endpoint_id or "", row.key_id or "", row.unit or "request")
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = Cell()
            cell.add_charge(row.status_code, row.outcome, row.units, row.amount_micros, row.queue_seconds, row.run_seconds)
    return cells


async def roll(db: Database, *, batch: int = BATCH, max_batches: int = MAX_BATCHES) -> int:
    """Roll up charge rows not rolled up yet, oldest first, ``batch`` rows per
    transaction, until none are left (or ``max_batches``); returns how many."""
    total = 0
    for _ in range(max_batches):
        done = await _roll_batch(db, batch)
        total += done
        if done < batch:
            break
    return total


async def _roll_batch(db: Database, batch: int) -> int:
    async with db.write() as conn:
        if not db.is_sqlite and not (await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK)))).scalar():
            return 0  # another reaper is rolling: its turn
        rows = (await conn.execute(_UNROLLED_ROWS, {"batch": batch})).all()
        if not rows:
            return 0
        cells = fold_rows(rows)
        existing = (
            await conn.execute(sa.select(charge_rollup).where(sa.tuple_(_H.span, _H.start, _H.endpoint_id, _H.key_id, _H.unit).in_(list(cells))))
        ).all()
        grown = []
        for row in existing:
            cell = cells.pop((row.span, row.start, row.endpoint_id, row.key_id, row.unit))
            cell.add_cell(row)
            grown.append({"cell_id": row.id, **cell.columns()})
        if grown:
            await conn.execute(_GROW, grown)
        if cells:
            await conn.execute(
                charge_rollup.insert(),
                [{"span": k[0], "start": k[1], "endpoint_id": k[2], "key_id": k[3], "unit": k[4], **cell.columns()} for k, cell in cells.items()],
            )
        await conn.execute(_MARK, {"ids": [row.id for row in rows]})
        return len(rows)
