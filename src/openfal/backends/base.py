"""The contract between the worker and a backend.

A backend receives claimed ``Job``s and returns one ``Output`` (or raises / returns a
``RunError``) per job. It reports progress through ``job.emit`` and checks
``job.cancelled`` between units of work. Media produced by a backend travel as
``MediaBlob`` values anywhere inside ``Output.payload``; the worker writes them to the
media store (or inlines them as data URIs for ``sync_mode``) and puts fal's File
object in their place, so no backend knows where files live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from openfal.errors import RunError
from openfal.events import Event
from openfal.models import Usage


@dataclass(frozen=True, slots=True)
class Output:
    """A successful result: the JSON body (with ``MediaBlob`` placeholders) and usage."""

    payload: dict[str, Any]
    usage: Usage = field(default_factory=Usage)


class Job:
    """One claimed request as a backend sees it.

    ``emit`` and ``cancelled`` are safe to call from any thread: the local backend runs
    diffusers in a worker thread and reports each denoising step from there.
    """

    def __init__(
        self,
        *,
        request_id: str,
        endpoint_id: str,
        input: dict[str, Any],
        attempt: int = 1,
        emit: Callable[[Event], None] | None = None,
        key_id: str | None = None,
        state: dict[str, Any] | None = None,
        priority: str = "normal",
        no_retry: bool = False,
    ) -> None:
        self.request_id = request_id
        self.endpoint_id = endpoint_id
        self.input = input
        self.attempt = attempt
        self.key_id = key_id
        #: the client's X-Fal-Queue-Priority (``normal`` or ``low``), for relays to pass on
        self.priority = priority
        #: the client's X-Fal-No-Retry, for relays to pass on
        self.no_retry = no_retry
        #: backend-private state persisted with the request (relay: upstream id and key);
        #: the backend updates it through ``save_state`` so a retry can resume
        self.state: dict[str, Any] = dict(state or {})
        self._emit = emit or (lambda event: None)
        self._cancelled = threading.Event()
        #: set with the cancel when the run outlived the server's time limit
        self.timed_out = False
        self.started = time.monotonic()
        self.save_state: Callable[[dict[str, Any]], Any] = lambda state: None

    def emit(self, event: Event) -> None:
        self._emit(event)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


@runtime_checkable
class Backend(Protocol):
    """What the worker needs from a backend."""

    #: the name used in routing configuration (``local``, ``relay``, ``builtin``)
    name: str
    #: how many compatible requests one ``run`` call may take (1: no batching)
    max_batch_size: int
    #: slots per worker process when ``Settings.concurrency`` does not name this backend
    default_concurrency: int

    @property
    def max_run_seconds(self) -> float | None:
        """How long one run may take, when the backend knows better than the server's
        ``max_run_seconds`` (a relay: its upstream's own deadline); None otherwise."""
        ...

    def batch_key(self, endpoint_id: str, input: dict[str, Any]) -> str | None:
        """Requests with equal non-None keys may run together in one ``run`` call."""
        ...

    def admit(self, endpoint_id: str, input: dict[str, Any]) -> None:
        """Called at submit with the validated input: raise ``InputInvalid`` for what
        this backend will not run (an output past the operator's pixel cap), so it is
        a 422 before anything is queued or charged."""
        ...

    async def start(self) -> None:
        """Acquire long-lived resources (HTTP clients, warm models)."""
        ...

    async def close(self) -> None:
        ...

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        """Run the jobs; one result per job, in order. Raising fails all of them."""
        ...

    def status(self) -> dict[str, Any]:
        """What an operator wants to see of this backend in this process (loaded models,
        upstream key health), as JSON; called from the event loop every few seconds."""
        ...

    # -- what the worker and the runtime read besides running -----------------------------

    #: what ``/health/ready`` and logs call it (one local engine per GPU: ``gpu0``...); None: ``name``
    label: str | None
    #: seconds the dispatcher waits after an empty claim, so requests arriving together
    #: are claimed together (0 unless the backend batches)
    gather_seconds: float
    #: whether a worker's free slots may claim together, several runs from one look at
    #: the queue (False for a backend whose ``claim_gate`` holds a slot back: a GPU's
    #: second slot claims only once the GPU is free)
    claims_together: bool

    @property
    def ready(self) -> bool:
        """False while the backend warms up (preloaded models loading and compiling):
        ``/health/ready`` answers 503 ``warming_up``."""
        ...

    async def claim_gate(self) -> None:
        """Return when a free slot may claim: at once for most backends; a local GPU
        engine's second slot waits until the GPU is free."""
        ...

    def wake(self, token: str) -> bool:
        """An upstream's completion webhook (``POST /api/relay/webhook/{token}``) names
        this backend: wake what follows that request early. False when the token is not
        this backend's or nothing here follows it (only a relay follows upstreams)."""
        ...


class BackendBase:
    """The contract's defaults for a backend that does not batch, warm up or gate its
    claims: subclass it and write only what the backend does (``name``, ``run``)."""

    name: str
    max_batch_size = 1
    default_concurrency = 1
    label: str | None = None
    gather_seconds = 0.0
    claims_together = True

    @property
    def max_run_seconds(self) -> float | None:
        return None

    @property
    def ready(self) -> bool:
        return True

    def admit(self, endpoint_id: str, input: dict[str, Any]) -> None:
        return None

    def batch_key(self, endpoint_id: str, input: dict[str, Any]) -> str | None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {}

    async def claim_gate(self) -> None:
        return None

    def wake(self, token: str) -> bool:
        return False
