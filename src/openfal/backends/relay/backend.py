"""The relay backend: forwards a request to an upstream fal-compatible queue, follows
it, and hands back its result with every file re-hosted by openfal.

One run per job, all concurrent:

1. resume the upstream request named in ``job.state`` (a retry after a worker died),
   or submit, failing over across keys before the upstream accepts the work, and save
   the upstream request id, URLs and key in ``job.state`` *before* waiting on it;
2. poll its status with backoff (or sooner, when an upstream webhook wakes us),
   mirroring queue position and logs; forward a cancel; give up after ``timeout``;
3. fetch the result; copy every media URL into openfal's media (as MediaBlobs the
   worker publishes); map failures onto fal's error vocabulary.

Upstream ids and URLs stay in ``job.state``; clients only ever see openfal's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from openfal.aio import wait_event
from openfal.backends.base import BackendBase, Job, Output
from openfal.backends.relay import errors
from openfal.backends.relay.client import Handle, Reply, UpstreamClient, UpstreamUnreachable
from openfal.backends.relay.config import UpstreamConfig, origin_of
from openfal.backends.relay.follow import Mirror, valid_status
from openfal.backends.relay.key_pool import KeyHealth, KeyPool
from openfal.backends.relay.media import RehostFailed, download, rehost
from openfal.backends.relay.retry import TRY_AGAIN, Answer, classify
from openfal.backoff import Backoff
from openfal.config import Settings
from openfal.errors import InternalError, RunCancelled, RunError, UpstreamFailed
from openfal.fetch import make_client
from openfal.media import MediaStore, open_media
from openfal.media.own import inline_own_media

log = logging.getLogger("openfal.relay")

#: how often a waiting follower looks at ``job.cancelled``
CANCEL_CHECK_SECONDS = 0.1
#: state writes for log progress, at most this often
STATE_SAVE_SECONDS = 2.0
#: temporary downloads older than this are swept (the worker copies them long before)
TMP_TTL_SECONDS = 3600.0
WEBHOOK_PATH = "/api/relay/webhook/"
#: the longest wait between submits that could not reach the upstream
SUBMIT_BACKOFF_MAX = 5.0
#: a cancel is forwarded this many times at most, this far apart
CANCEL_TRIES = 3
CANCEL_BACKOFF = Backoff(0.2, 0.8)


class RelayBackend(BackendBase):

    def __init__(
        self,
        config: UpstreamConfig,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        media_http: httpx.AsyncClient | None = None,
        media: MediaStore | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.name = config.name
        self.default_concurrency = config.concurrency
        self.keys = KeyPool(config)
        self._http, self._media_http = http, media_http
        self._trusted_http: httpx.AsyncClient | None = media_http
        self._owned: list[httpx.AsyncClient] = []
        #: our media store (the runtime's, borrowed), to inline files clients uploaded to
        #: us and to read our own URLs in results; without one, one of our own is opened
        #: on first use and closed with the backend
        self._media: MediaStore | None = media
        self._own_media: MediaStore | None = None
        self.tmp_dir: Path = settings.data_dir.resolve() / "tmp" / "relay"
        self._last_sweep = 0.0
        #: openfal request id -> event set by an upstream webhook for it
        self._wakers: dict[str, asyncio.Event] = {}
        self._webhook_secret = secrets.token_bytes(32)

    # -- Backend protocol -------------------------------------------------------------

    # admit and batch_key: BackendBase's (the upstream decides what it runs; one request a call)

    async def start(self) -> None:
        limits = httpx.Limits(max_connections=max(10, self.config.concurrency * 2), max_keepalive_connections=20)
        if self._http is None:
            self._http = httpx.AsyncClient(limits=limits, follow_redirects=False)
            self._owned.append(self._http)
        if self._media_http is None:
            self._media_http = make_client(self.settings, media=self._media)  # guarded unless private URLs are allowed
            self._owned.append(self._media_http)
        if self._trusted_http is None:  # the upstream's own origin, which the operator chose
            self._trusted_http = httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False)
            self._owned.append(self._trusted_http)
        await asyncio.to_thread(self._sweep_tmp)

    @property
    def max_run_seconds(self) -> float:
        """The worker's limit for a relayed run: the upstream's own overall ``timeout``
        (which cancels upstream and fails cleanly first), plus a margin."""
        return self.config.timeout + 60.0

    def status(self) -> dict[str, Any]:
        return {"upstream": self.config.base_url, "keys": self.keys.snapshot()}

    async def close(self) -> None:
        for client in self._owned:
            await client.aclose()
        self._owned.clear()
        if self._own_media is not None:
            await self._own_media.close()
            self._media = self._own_media = None

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        if self._http is None:
            await self.start()
        return await asyncio.gather(*(self._run_one(job) for job in jobs))

    # -- webhooks (optional: they only wake a follower early) ----------------------------

    def webhook_token(self, request_id: str) -> str:
        mac = hmac.new(self._webhook_secret, f"{self.name}/{request_id}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{self.name}.{request_id}.{mac}"

    def wake(self, token: str) -> bool:
        """Wake the follower a webhook token names; False if the token is not ours or
        nothing in this process follows that request."""
        name, _, rest = token.partition(".")
        request_id, _, mac = rest.rpartition(".")
        if name != self.name or not request_id or not hmac.compare_digest(self.webhook_token(request_id), token):
            return False
        event = self._wakers.get(request_id)
        if event is None:
            return False
        event.set()
        return True

    def _webhook_url(self, job: Job) -> str | None:
        if not self.config.webhook or not self.settings.public_base_url:
            return None
        return f"{self.settings.public_base_url}{WEBHOOK_PATH}{self.webhook_token(job.request_id)}"

    # -- one request --------------------------------------------------------------------

    async def _run_one(self, job: Job) -> Output | RunError:
        self._wakers[job.request_id] = asyncio.Event()
        try:
            return await self._relay(job)
        except RunError as exc:
            return exc
        except asyncio.CancelledError:
            raise  # the worker is stopping: leave the upstream request to be resumed
        except Exception as exc:
            log.exception("relay %s failed on %s", self.name, job.request_id)
            return InternalError(f"The relay failed: {type(exc).__name__}: {exc}")
        finally:
            self._wakers.pop(job.request_id, None)
            if time.monotonic() - self._last_sweep > 600:
                self._last_sweep = time.monotonic()
                await asyncio.to_thread(self._sweep_tmp)

    async def _relay(self, job: Job) -> Output | RunError:
        handle = Handle.from_state(job.state)
        if handle is None:
            if job.cancelled:
                return RunCancelled()
            handle = await self._submit(job)
            job.state = {**handle.state(), "upstream": self.name, "submitted_at": time.time(), "logs_seen": 0}
            await self._save(job)
        else:
            log.info("relay %s: resuming upstream request of %s (attempt %d)", self.name, job.request_id, job.attempt)
        key = self.keys.get(handle.key_id)
        if key is None:
            return UpstreamFailed(
                f"The upstream key that accepted this request ({handle.key_id}) is no longer configured for upstream {self.name!r}",
                status_code=500,
                error_type="internal_error",
            )
        deadline = float(job.state.get("submitted_at") or time.time()) + self.config.timeout
        status = await self._follow(job, handle, key, deadline)
        if status is None:
            await self._cancel_upstream(handle, key)
            return RunCancelled()
        return await self._result(job, handle, key, status)

    # -- submit ---------------------------------------------------------------------------

    async def _inlined(self, input: dict[str, Any]) -> dict[str, Any]:
        """Files clients uploaded to us travel as data URIs: the upstream cannot fetch them."""
        if self._media is None:
            self._media = self._own_media = open_media(self.settings)
        return await inline_own_media(input, self._media, self.settings.fetch_max_bytes)

    async def _submit(self, job: Job) -> Handle:
        """Hand the input to the upstream, trying other keys until one accepts it."""
        client = self._client()
        upstream_input = await self._inlined(job.input)
        tries = 0
        last: tuple[str | None, str] = (None, "every key is cooling down after errors")
        while tries < self.config.submit_attempts:
            key = self.keys.pick()
            if key is None:
                wait = self.keys.ready_in()
                if wait > self.config.submit_wait_max:
                    break
                if await self._pause(job, wait):
                    raise RunCancelled()
                continue
            if job.cancelled:
                raise RunCancelled()
            tries += 1
            try:
                reply = await self._send(client, job, upstream_input, key)
            except UpstreamUnreachable as exc:
                # not key-specific: back off (a timeout after sending may mean it was taken)
                last = ("connection", f"cannot reach upstream {self.name!r}: {exc}")
                log.warning("relay %s: submit of %s with key %s: %s", self.name, job.request_id, key.id, exc)
                if await self._pause(job, Backoff(self.config.cooldown, SUBMIT_BACKOFF_MAX).delay(tries - 1)):
                    raise RunCancelled() from None
                continue
            accepted = self._accepted(client, job, key, reply)
            if isinstance(accepted, Handle):
                return accepted
            last = accepted
        raise self._not_taken(tries, *last)

    async def _send(self, client: UpstreamClient, job: Job, upstream_input: dict[str, Any], key: KeyHealth) -> Reply:
        return await client.submit(
            job.endpoint_id,
            upstream_input,
            key.secret,
            webhook_url=self._webhook_url(job),
            priority=job.priority,
            no_retry=job.no_retry,
            # an upstream openfal answers a repeat (after a crash between its accepting
            # and our saving the upstream id) with the first request; fal ignores the header
            idempotency_key=job.request_id,
        )

    def _accepted(self, client: UpstreamClient, job: Job, key: KeyHealth, reply: Reply) -> Handle | tuple[str, str]:
        """The accepted request, or (kind, problem) when another key may take it; raises
        when the upstream refused the input itself."""
        answer, code = classify(reply.status_code), reply.status_code
        if answer is Answer.OK:
            handle = client.handle_from(job.endpoint_id, reply.body, key.id) if isinstance(reply.body, dict) else None
            if handle is None:
                raise errors.trouble(
                    "malformed",
                    f"Upstream {self.name!r} accepted the request but its answer names no request id "
                    f"(HTTP {code}: {reply.snippet(80)!r})",
                    retryable=False,
                )
            self.keys.succeeded(key)
            return handle
        if answer is Answer.AUTH_FAILED:
            self.keys.failed(key, f"HTTP {code}", auth=True)
            log.error("relay %s: upstream refused key %s (HTTP %d); it is skipped for %g s", self.name, key.id, code, self.config.auth_cooldown)
            return "auth", f"HTTP {code}"
        if answer in TRY_AGAIN:
            cooling = self.keys.failed(key, f"HTTP {code}")
            log.warning("relay %s: key %s got HTTP %d at submit; cooling down %g s", self.name, key.id, code, cooling)
            return errors.kind_of(answer), f"upstream {self.name!r} answered HTTP {code}"
        raise errors.passthrough(reply)  # the upstream refused this input: final

    def _not_taken(self, tries: int, last_kind: str | None, last_problem: str) -> UpstreamFailed:
        refused = [k for k in self.keys.keys if k.last_problem in {"HTTP 401", "HTTP 403"}]
        if len(refused) == len(self.keys.keys):
            return errors.key_refused(self.name, int((refused[-1].last_problem or "HTTP 401")[5:]))
        kind = last_kind if last_kind in errors.TROUBLE else "busy"
        return errors.trouble(kind, f"The upstream could not take the request after {tries} tries: {last_problem}")

    # -- follow ---------------------------------------------------------------------------

    async def _follow(self, job: Job, handle: Handle, key: KeyHealth, deadline: float) -> dict[str, Any] | None:
        """Poll until COMPLETED (its status body) or cancelled (None)."""
        client = self._client()
        mirror = Mirror(int(job.state.get("logs_seen") or 0))
        backoff = Backoff(self.config.poll_interval, self.config.poll_max_interval, self.config.poll_backoff)
        interval, failures, problem, saved_at = backoff.base, 0, ("server", ""), time.monotonic()
        while True:
            if job.cancelled:
                return None
            if time.time() > deadline:
                await self._cancel_upstream(handle, key)
                raise UpstreamFailed(
                    f"The upstream did not finish the request within {self.config.timeout:g} s",
                    status_code=504,
                    error_type="request_timeout",
                )
            try:
                reply = await client.status(handle, key.secret)
            except UpstreamUnreachable as exc:
                failures, problem = failures + 1, ("connection", f"cannot reach upstream {self.name!r}: {exc}")
            else:
                bad = self._poll_problem(reply)
                if bad is None:
                    failures = 0
                    changed, saved_at = await self._mirror(job, mirror, reply.body, saved_at)
                    if reply.body["status"] == "COMPLETED":
                        return reply.body
                    interval = backoff.base if changed else min(interval * backoff.factor, backoff.cap)
                else:
                    failures, problem = failures + 1, bad
            if failures:
                log.warning("relay %s: status of %s failed (%d in a row): %s", self.name, job.request_id, failures, problem[1])
                if failures >= self.config.max_poll_failures:
                    raise errors.trouble(problem[0], f"Following the upstream request failed {failures} times: {problem[1]}")
                interval = backoff.grow(interval)
            await self._pause(job, interval, wake=self._wakers.get(job.request_id))

    def _poll_problem(self, reply: Reply) -> tuple[str, str] | None:
        """None for a status to mirror, (kind, problem) for a failed poll worth repeating;
        raises when following cannot go on (key refused, request forgotten)."""
        answer, code = classify(reply.status_code), reply.status_code
        if code in {200, 202} and valid_status(reply.body):
            return None
        if answer is Answer.AUTH_FAILED:
            raise errors.key_refused(self.name, code)
        if answer is Answer.GONE:
            raise UpstreamFailed(
                f"Upstream {self.name!r} no longer knows this request (HTTP {code})",
                status_code=502,
                error_type="runner_disconnected",
            )
        if answer in {Answer.OK, Answer.UNEXPECTED}:
            return "malformed", f"upstream {self.name!r} sent a malformed status: HTTP {code} {reply.snippet(80)!r}"
        return errors.kind_of(answer), f"upstream {self.name!r} answered HTTP {code} to a status poll"

    async def _mirror(self, job: Job, mirror: Mirror, body: dict[str, Any], saved_at: float) -> tuple[bool, float]:
        """Pass the status on; (whether anything changed, when the log count was saved)."""
        changed = mirror.apply(job, body)
        if mirror.logs_seen != job.state.get("logs_seen") and (
            body["status"] == "COMPLETED" or time.monotonic() - saved_at > STATE_SAVE_SECONDS
        ):
            job.state = {**job.state, "logs_seen": mirror.logs_seen}
            await self._save(job)
            saved_at = time.monotonic()
        return changed, saved_at

    async def _cancel_upstream(self, handle: Handle, key: KeyHealth) -> None:
        client = self._client()
        for attempt in range(CANCEL_TRIES):
            try:
                reply = await client.cancel(handle, key.secret)
            except UpstreamUnreachable as exc:
                log.warning("relay %s: cancel of upstream request failed: %s", self.name, exc)
            else:
                # only 429 and 5xx are worth another cancel (as before one classification)
                if classify(reply.status_code) not in TRY_AGAIN or reply.status_code in {408, 409}:
                    outcome = reply.body.get("status") if isinstance(reply.body, dict) else None
                    log.info("relay %s: upstream cancel answered HTTP %d %s", self.name, reply.status_code, outcome)
                    return
            await asyncio.sleep(CANCEL_BACKOFF.delay(attempt))
        log.error("relay %s: could not forward a cancel upstream", self.name)

    # -- result ---------------------------------------------------------------------------

    async def _result(self, job: Job, handle: Handle, key: KeyHealth, status: dict[str, Any]) -> Output | RunError:
        client = self._client()
        failed = status.get("error") is not None or status.get("error_type") is not None
        backoff = Backoff(self.config.poll_interval, self.config.poll_max_interval)
        problem = ("server", "")
        for attempt in range(self.config.max_poll_failures):
            if attempt and await self._pause(job, backoff.delay(attempt)):
                return RunCancelled()
            try:
                reply = await client.result(handle, key.secret)
            except UpstreamUnreachable as exc:
                problem = ("connection", f"cannot reach upstream {self.name!r}: {exc}")
                continue
            answer = classify(reply.status_code)
            if answer is Answer.OK and not failed:
                if isinstance(reply.body, dict):
                    return await self._rehost(job, reply.body)
                problem = ("malformed", f"upstream {self.name!r} sent a result that is not a JSON object: {reply.snippet(80)!r}")
                continue
            if answer is Answer.AUTH_FAILED:
                return errors.key_refused(self.name, reply.status_code)
            if answer is Answer.GONE:
                return UpstreamFailed(
                    f"Upstream {self.name!r} no longer has this request's result (HTTP {reply.status_code})",
                    status_code=502,
                    error_type="runner_incomplete_response",
                )
            # a 409 on the result is the upstream's final answer, passed through (as before)
            if failed or answer is Answer.FATAL or reply.status_code == 409:
                return errors.passthrough(reply, status, scrub=(handle.request_id, job.request_id))
            problem = (errors.kind_of(answer), f"upstream {self.name!r} answered HTTP {reply.status_code} to the result fetch")
        log.warning("relay %s: result of %s: %s", self.name, job.request_id, problem[1])
        return errors.trouble(problem[0], f"Fetching the upstream result failed: {problem[1]}")

    async def _rehost(self, job: Job, payload: dict[str, Any]) -> Output | RunError:
        assert self._media_http is not None and self._trusted_http is not None
        guarded, plain = self._media_http, self._trusted_http
        trusted = {self.config.origin}

        def client_for(url: str) -> httpx.AsyncClient:
            return plain if origin_of(url) in trusted else guarded
        timeout = self.config.media_timeout or self.settings.fetch_timeout_seconds

        async def fetch(url: str):  # type: ignore[no-untyped-def]
            return await download(
                client_for, url, max_bytes=self.settings.fetch_max_bytes, timeout=timeout, tmp_dir=self.tmp_dir
            )

        try:
            body, usage = await rehost(payload, fetch, max_bytes=self.settings.fetch_max_bytes)
        except RehostFailed as exc:
            log.warning("relay %s: %s (%s)", self.name, exc, job.request_id)
            return UpstreamFailed(str(exc), status_code=502, error_type="runner_incomplete_response", retryable=exc.retryable)
        return Output(body, usage=usage)

    # -- helpers ----------------------------------------------------------------------------

    def _client(self) -> UpstreamClient:
        assert self._http is not None
        return UpstreamClient(self.config, self._http)

    async def _pause(self, job: Job, seconds: float, wake: asyncio.Event | None = None) -> bool:
        """Sleep up to ``seconds``, less if woken; True if the job was cancelled."""
        end = time.monotonic() + seconds
        while not job.cancelled:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            if wake is not None and wake.is_set():
                wake.clear()
                return False
            step = min(remaining, CANCEL_CHECK_SECONDS)
            if wake is not None:
                await wait_event(wake, step)
            else:
                await asyncio.sleep(step)
        return True

    async def _save(self, job: Job) -> None:
        try:
            saved = job.save_state(dict(job.state))
            if inspect.isawaitable(saved):
                await saved
        except Exception:
            log.exception("relay %s: saving the upstream request of %s failed; a retry submits again (an upstream openfal answers it with the first request, fal runs it twice)", self.name, job.request_id)

    def _sweep_tmp(self) -> None:
        if not self.tmp_dir.is_dir():
            return
        cutoff = time.time() - TMP_TTL_SECONDS
        for path in self.tmp_dir.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue
