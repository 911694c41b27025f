"""What status polls read, kept in memory and current through the store's own change
feed, so a poll costs no database round trip while nothing changed.

fal's clients poll every pending request about ten times a second, so reads outnumber
changes by orders of magnitude. Two things are kept:

* **records** by request id. A COMPLETED record never changes again (retention only
  deletes it), so it is kept for ``TERMINAL_SECONDS``. A pending record is kept only
  while the change feed is *live* (this process learns every committed change: its own
  writes invalidate at commit, other processes' through PostgreSQL LISTEN/NOTIFY or,
  on SQLite, ``PRAGMA data_version``), for at most ``LIVE_SECONDS``. Without a live
  feed pending records are always read from the database: polling is the fallback.
* **queue snapshots** by backend: who is queued, per priority and per key, and each
  key's last turn, from which positions follow the claim order (priority, then the
  key that has waited longest for its turn, then FIFO). A snapshot serves while it is
  current (the store's notices, this process's and others', carry each queue change,
  which it takes in place); one that missed a change is read again, except that a deep
  one (``DEEP_QUEUE`` or more queued) still serves for ``DEEP_SNAPSHOT_SECONDS`` after
  it was read, since reading it costs as much as the queue is long.

A read that began before a change it raced with must not be kept: every fill holds a
token that an invalidation (of that id, or of everything) takes away.
"""

from __future__ import annotations

import heapq
import time
import uuid
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace

from openfal.models import RequestRecord, Status

TERMINAL_SECONDS = 300.0
LIVE_SECONDS = 30.0
MAX_RECORDS = 20_000
#: from this many queued requests, a backend's snapshot may be this old
DEEP_QUEUE = 1000
DEEP_SNAPSHOT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Entry:
    record: RequestRecord
    at: float
    generation: int


@dataclass(slots=True)
class _Level:
    """One priority level of a queue: each key's queued seqs and its rotation order."""

    seqs: dict[str, list[int]] = field(default_factory=dict)
    #: key -> its rank in the rotation (0 claims first)
    rank: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(s) for s in self.seqs.values())


class QueueSnapshot:
    """A backend's queue as of the store's ``epoch`` for it, for positions. This
    process's own commits are applied to it in place (idempotently: a read in flight
    may already include them), so a poll after them needs no new read.

    A key's turn comes when it has waited longest: since its last turn, or since its
    oldest queued request arrived if that is later. Levels are served in priority
    order, so at a lower level the keys served above come last, in the order they
    finished there (a key's last request above is claimed in round ``n - 1``)."""

    def __init__(self, rows: list[tuple[int, int, str, float]], turns: dict[str, float], *, epoch: int, generation: int) -> None:
        self.levels: dict[int, _Level] = {}
        #: seq -> created_at, of every queued request
        self.created: dict[int, float] = {}
        self.turns = dict(turns)
        self.at = time.monotonic()
        self.epoch = epoch
        self.generation = generation
        for seq, priority, key, created in sorted(rows):
            self.levels.setdefault(priority, _Level()).seqs.setdefault(key, []).append(seq)
            self.created[seq] = created
        #: the rotation is ranked again at the next position asked, not at every change
        #: (changes may come far more often than polls: O(keys log keys) each)
        self._ranked = False

    @property
    def size(self) -> int:
        return len(self.created)

    def position(self, priority: int, key: str, seq: int) -> int:
        """How many queued requests will be claimed before (priority, key, seq): every one
        of a higher priority; at its own, round-robin: its key's requests ahead of it,
        and as many of each other key's, one more from keys ahead of its key's turn."""
        if not self._ranked:
            self._rank()
        ahead = sum(level.size for p, level in self.levels.items() if p < priority)
        level = self.levels.get(priority)
        if level is None:
            return ahead
        index = bisect_left(level.seqs.get(key, []), seq)
        mine = level.rank.get(key, len(level.rank))
        for other, seqs in level.seqs.items():
            if other != key:
                ahead += min(len(seqs), index) + (len(seqs) > index and level.rank[other] < mine)
        return ahead + index

    def claim_order(self, count: int, skip: Collection[str] = ()) -> list[str]:
        """The first ``count`` keys a claim takes from, in its order (the database's
        candidates query, claim_statements.py): by the priority of each key's head, then
        the key that has waited longest for its turn (since its last turn, or since its
        head came if that is later), then the head's seq; ``skip``: keys left out (at
        their limit). One pass over the waiting keys, no ranking of the whole rotation:
        a claim asks after every turn."""
        order: list[str] = []
        for priority in sorted(self.levels):
            seqs = self.levels[priority].seqs
            taken = set(order)

            waiting = (key for key in seqs if key not in taken and key not in skip)
            order += heapq.nsmallest(count - len(order), waiting, key=lambda key, seqs=seqs: self._waited_since(key, seqs[key][0]))  # type: ignore[misc]
            if len(order) >= count:
                break
        return order

    def _waited_since(self, key: str, head: int) -> tuple[float, int]:
        """A key's place in the rotation with ``head`` its first queued request: waiting
        since its last turn, or since its head came if that is later, then FIFO."""
        return max(self.turns.get(key, 0.0), self.created[head]), head

    def drop_head(self, key: str) -> None:
        """A claim found none of ``key``'s requests to take where this snapshot holds
        some: its head left without this process being told (or another claimer holds
        it and will tell). Dropped, so later claims do not ask that key for it again;
        a notice of it, if one comes, finds it gone (``remove`` is idempotent)."""
        for priority in sorted(self.levels):
            seqs = self.levels[priority].seqs.get(key)
            if seqs:
                self.remove(priority, key, seqs[0])
                return

    # -- this process's own commits ------------------------------------------------

    def add(self, priority: int, key: str, seq: int, created: float) -> None:
        """A request joined the queue. Behind its key's head at the lowest priority
        (the usual submit to a busy queue) it changes no key's turn: the rotation stays
        ranked, so a submit's position costs no new ranking of every waiting key."""
        seqs = self.levels.setdefault(priority, _Level()).seqs.setdefault(key, [])
        if seq in self.created:
            return
        behind_head = bool(seqs) and seq > seqs[0] and priority == max(self.levels)
        insort(seqs, seq)
        self.created[seq] = created
        if not behind_head:
            self._ranked = False

    def remove(self, priority: int, key: str, seq: int, *, turn: float | None = None) -> None:
        """A request left the queue (with ``turn``: claimed then, its key's turn)."""
        level = self.levels.get(priority)
        if seq in self.created and level is not None and key in level.seqs:
            level.seqs[key].remove(seq)
            del self.created[seq]
            if not level.seqs[key]:
                del level.seqs[key]
            if not level.seqs:
                del self.levels[priority]
        if turn is not None:
            self.turns[key] = max(turn, self.turns.get(key, 0.0))
        self._ranked = False

    def _rank(self) -> None:
        self._ranked = True
        #: key -> (0, waited since) before it is served here, (1, n) once it was, n-th
        waited: dict[str, tuple[int, float]] = {}
        served = 0
        for priority in sorted(self.levels):
            level = self.levels[priority]

            def since(key: str, level: _Level = level) -> tuple[tuple[int, float], int]:
                head = level.seqs[key][0]
                return waited.get(key, (0, self._waited_since(key, head)[0])), head

            level.rank = {k: i for i, k in enumerate(sorted(level.seqs, key=since))}
            for key in sorted(level.seqs, key=lambda k, level=level: (len(level.seqs[k]), level.rank[k])):  # type: ignore[misc]
                served += 1
                waited[key] = (1, float(served))


class StatusCache:
    """This process's cache of what status polls read: request records and queue
    snapshots (one answer built from them is a ``service.StatusView``)."""

    def __init__(self) -> None:
        self._records: OrderedDict[str, _Entry] = OrderedDict()
        self._fills: dict[str, object] = {}
        self._queues: dict[str, QueueSnapshot] = {}
        self._epochs: dict[str, int] = {}
        #: backend -> the changes to its queue since its snapshot read in flight began
        #: (None: one whose delta is unknown), applied to that snapshot when it lands
        self._reading: dict[str, list[Callable[[QueueSnapshot], None] | None]] = {}
        #: bumped whenever changes may have been missed: nothing older is trusted
        self.generation = 0
        #: whether every committed change reaches this process (see the module docstring)
        self.live = False
        #: this process's mark on the notifications it sends
        self.origin = uuid.uuid4().hex[:12]

    # -- records ------------------------------------------------------------------

    def record(self, request_id: str) -> RequestRecord | None:
        entry = self._records.get(request_id)
        if entry is None:
            return None
        age = time.monotonic() - entry.at
        if entry.record.status is Status.COMPLETED:
            fresh = age < TERMINAL_SECONDS
        else:
            fresh = self.live and entry.generation == self.generation and age < LIVE_SECONDS
        if not fresh:
            self._records.pop(request_id, None)
            return None
        return entry.record

    def begin_fill(self, request_id: str) -> object:
        """Call before reading ``request_id`` from the database; pass to ``fill``."""
        token = (object(), self.generation)
        self._fills[request_id] = token
        return token

    def filling(self, request_id: str, token: object) -> bool:
        """Whether the read that holds ``token`` began after the last change to it."""
        return self._fills.get(request_id) is token

    def fill(self, request_id: str, token: object, record: RequestRecord | None) -> None:
        """Keep what was read, unless a change raced with the read."""
        if self._fills.get(request_id) is not token:
            return
        del self._fills[request_id]
        if record is None or (record.status is not Status.COMPLETED and not self.live):
            return
        self._put(record)

    def put(self, record: RequestRecord) -> None:
        """A record this process just committed: it is the newest state there is."""
        self.changed(record.id)
        if record.status is Status.COMPLETED or self.live:
            self._put(record)

    def put_all(self, records: Iterable[RequestRecord]) -> None:
        for record in records:
            self.put(record)

    def _put(self, record: RequestRecord) -> None:
        """Kept without its input (status and result never read it, and it may be large);
        a ``sync_mode`` result, whose media are inline, is not kept at all."""
        if record.input.get("sync_mode") and record.status is Status.COMPLETED:
            return
        record = replace(record, input={}, backend_state={})
        self._records[record.id] = _Entry(record, time.monotonic(), self.generation)
        self._records.move_to_end(record.id)
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)

    def changed(self, request_id: str) -> None:
        self._records.pop(request_id, None)
        self._fills.pop(request_id, None)

    def forget(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self.changed(request_id)

    # -- queues -------------------------------------------------------------------

    def queue_changed(self, backend: str, apply: Callable[[QueueSnapshot], None] | None = None) -> None:
        """The backend's queue changed. ``apply`` is this process's own change: a
        snapshot current until now gets it in place and stays current."""
        epoch = self._epochs.get(backend, 0)
        self._epochs[backend] = epoch + 1
        if backend in self._reading:
            self._reading[backend].append(apply)
        snap = self._queues.get(backend)
        if apply is not None and snap is not None and snap.epoch == epoch and snap.generation == self.generation:
            apply(snap)
            snap.epoch = epoch + 1

    def epoch(self, backend: str) -> int:
        return self._epochs.get(backend, 0)

    def snapshot(self, backend: str) -> QueueSnapshot | None:
        """The backend's snapshot if it may still answer positions."""
        current = self.current_snapshot(backend)
        if current is not None:
            return current
        snap = self._queues.get(backend)
        if snap is not None and snap.generation == self.generation and snap.size >= DEEP_QUEUE and time.monotonic() - snap.at < DEEP_SNAPSHOT_SECONDS:
            return snap
        return None

    def current_snapshot(self, backend: str) -> QueueSnapshot | None:
        """The backend's snapshot only while every change since it was read has been
        applied to it (what a claim may choose from; a deep one that may have missed
        some still answers positions, ``snapshot``)."""
        snap = self._queues.get(backend)
        if snap is None or snap.generation != self.generation or not self.live or snap.epoch != self.epoch(backend):
            return None
        return snap

    def known_empty(self, backend: str) -> bool:
        """Whether the backend's queue is known to hold nothing (a current snapshot says so)."""
        snap = self.snapshot(backend)
        return snap is not None and snap.size == 0

    def begin_read(self, backend: str) -> object:
        """Call before reading the backend's queue; pass to ``keep_snapshot``. The
        changes that land meanwhile are kept for that snapshot, so a read that takes
        longer than the gap between changes (a deep queue under load) still lands
        current instead of being read again and again."""
        token: list[Callable[[QueueSnapshot], None] | None] = []
        self._reading[backend] = token
        return token

    def end_read(self, backend: str, token: object) -> None:
        """The read that holds ``token`` is over (kept, or failed)."""
        if self._reading.get(backend) is token:
            del self._reading[backend]

    def keep_snapshot(self, backend: str, snap: QueueSnapshot, token: object = None) -> None:
        if token is not None and self._reading.get(backend) is token:
            self.end_read(backend, token)
            changes: list[Callable[[QueueSnapshot], None] | None] = token  # type: ignore[assignment]
            known = [change for change in changes if change is not None]
            if snap.generation == self.generation and len(known) == len(changes):
                for change in known:
                    change(snap)  # idempotent: the read may already hold it
                snap.epoch = self.epoch(backend)
        current = self._queues.get(backend)
        if current is None or (snap.generation, snap.epoch, snap.at) >= (current.generation, current.epoch, current.at):
            self._queues[backend] = snap

    # -- the feed -----------------------------------------------------------------

    def everything_changed(self) -> None:
        """Changes may have been missed: drop every pending record and queue snapshot."""
        self.generation += 1
        self._fills.clear()
        for request_id in [k for k, e in self._records.items() if e.record.status is not Status.COMPLETED]:
            del self._records[request_id]
        for backend in list(self._queues):
            self.queue_changed(backend)

    def set_live(self, live: bool) -> None:
        """The feed connected (changes before it may have been missed) or was lost."""
        self.live = live
        self.everything_changed()
