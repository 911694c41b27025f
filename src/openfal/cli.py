"""The ``openfal`` command: serve, worker, keys, models, migrate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from openfal.config import Settings

DEMO_KEY_FILE = "demo-key.txt"


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


#: libraries whose INFO lines are one per routine call: alembic's per migration step, httpx's
#: per request (every read of the server's own files through media/own.py, every relay poll,
#: every webhook check); openfal logs what matters of those itself
QUIET_LOGGERS = ("alembic", "httpx")


def quiet_libraries() -> None:
    """Only warnings and errors from QUIET_LOGGERS."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@click.group()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Folder for the database, media and models [OPENFAL_DATA_DIR].")
@click.option("--database-url", default=None, help="SQLAlchemy URL [OPENFAL_DATABASE_URL].")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None, database_url: str | None) -> None:
    """openfal: a self-hosted fal.ai-compatible queue server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    from openfal import log_redaction

    log_redaction.install()  # every command: no token, key or signature in any log line
    ctx.obj = {"data_dir": data_dir, "database_url": database_url}


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--demo", is_flag=True, help="Serve the tiny random-weight models; create and print a demo API key.")
@click.option("--workers/--no-workers", default=None, help="Run workers in this process [OPENFAL_IN_PROCESS_WORKERS].")
@click.option("--public-base-url", default=None, help="URL clients reach this server at [OPENFAL_PUBLIC_BASE_URL].")
@click.option("--ssl-certfile", default=None, help="Serve HTTPS with this certificate (fal's Python client needs https).")
@click.option("--ssl-keyfile", default=None)
@click.option("--gpus", default=None, help="One local engine per GPU: 'all' or indices such as 0,1 [OPENFAL_GPUS].")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, demo: bool, workers: bool | None, public_base_url: str | None, ssl_certfile: str | None, ssl_keyfile: str | None, gpus: str | None) -> None:
    """Run the HTTP API (and, by default, workers) in one process."""
    import uvicorn

    from openfal.http import create_app
    from openfal.realtime import MAX_FRAME_BYTES

    settings = _settings(**ctx.obj, demo=demo or None, in_process_workers=workers, public_base_url=public_base_url, gpus=gpus)
    if settings.demo and settings.auth_enabled:
        key = asyncio.run(_demo_key(settings))
        click.echo(f"demo API key: {key}  (also in {settings.data_dir / DEMO_KEY_FILE})")
    from openfal.pools import UnknownPoolName

    try:
        app = create_app(settings)
    except UnknownPoolName as exc:
        raise click.BadParameter(str(exc), param_hint="OPENFAL_POOLS") from None
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        proxy_headers=True,
        log_level="info",
        access_log=settings.access_log,
        ws_max_size=MAX_FRAME_BYTES,  # a larger realtime frame is refused before it is assembled
    )


async def _demo_key(settings: Settings) -> str:
    """The demo key: made once, kept in the data folder, re-made if it was revoked."""
    from openfal.store.api_keys import KeyStore
    from openfal.store.db import Database

    path = settings.data_dir / DEMO_KEY_FILE
    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        keys = KeyStore(db)
        if path.exists() and await keys.verify(path.read_text().strip()):
            return path.read_text().strip()
        _, secret = await keys.create("demo")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret + "\n")
        return secret
    finally:
        await db.close()


@main.command()
@click.option("--backend", "backends", multiple=True, help="Serve only these backends (repeatable) [OPENFAL_WORKER_BACKENDS].")
@click.option(
    "--models",
    default=None,
    help="Serve only these, comma-separated: model families (flux1, ltx), models (flux-dev) or endpoint ids; "
    "only their requests are claimed [OPENFAL_WORKER_MODELS].",
)
@click.option("--demo", is_flag=True, help="Use the tiny random-weight models.")
@click.option(
    "--port",
    "--metrics-port",
    "port",
    type=int,
    default=None,
    help="Serve /health (liveness), /health/ready and /metrics of this worker on this port [OPENFAL_WORKER_PORT].",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address of --port.")
@click.option("--gpus", default=None, help="One local engine (and claiming worker) per GPU: 'all' or indices such as 0,1 [OPENFAL_GPUS].")
@click.pass_context
def worker(ctx: click.Context, backends: tuple[str, ...], models: str | None, demo: bool, port: int | None, host: str, gpus: str | None) -> None:
    """Run workers only, against the shared store and media. SIGTERM drains: claiming
    stops at once, running requests get OPENFAL_DRAIN_SECONDS, the rest is handed back;
    the exit status is then 0."""
    from openfal.pools import UnknownPoolName

    try:
        settings = _settings(**ctx.obj, worker_backends=backends or None, worker_models=models, demo=demo or None, gpus=gpus, worker_port=port)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--models") from None
    try:
        asyncio.run(_run_worker(settings, host))
    except UnknownPoolName as exc:
        raise click.BadParameter(str(exc), param_hint="--models / OPENFAL_WORKER_MODELS") from None


async def _run_worker(settings: Settings, host: str) -> None:
    from openfal.runtime import Runtime

    runtime = Runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start(workers=True)
    http = await _worker_http(runtime, host, settings.worker_port) if settings.worker_port is not None else None
    ids = ", ".join(w.worker_id for w in runtime.workers)
    serving = "all endpoints" if runtime.worker_endpoints is None else f"{len(runtime.worker_endpoints)} endpoints ({', '.join(settings.worker_models)})"
    click.echo(f"worker {ids} running, serving {serving}", err=True)
    try:
        await stop.wait()
        click.echo("stopping: no new claims; draining running requests", err=True)
    finally:
        await runtime.stop()
        if http is not None:
            http[0].should_exit = True
            await http[1]
    click.echo("worker stopped", err=True)


async def _worker_http(runtime: Any, host: str, port: int) -> tuple[Any, asyncio.Task[None]]:
    """The worker's health and metrics server, on this event loop (its signals are the
    worker's: uvicorn's own handlers are not installed)."""
    import uvicorn

    from openfal.http.worker_app import worker_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # SIGTERM is the worker's drain, not this server's

    server = Server(uvicorn.Config(worker_app(runtime), host=host, port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(), name="worker-http")
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # the port could not be bound: say so
    return server, task


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the database schema."""
    from openfal.store.db import Database

    async def run() -> None:
        db = Database(_settings(**ctx.obj).effective_database_url)
        try:
            await db.migrate()
        finally:
            await db.close()

    asyncio.run(run())
    click.echo("database is up to date")


@main.group()
def keys() -> None:
    """Manage API keys."""


def _with_store(ctx: click.Context, store_type: Any, action: Any) -> Any:
    """Run ``action(store_type(db))`` against the configured (migrated) database."""
    from openfal.store.db import Database

    async def run() -> Any:
        db = Database(_settings(**ctx.find_root().obj).effective_database_url)
        try:
            await db.migrate()
            return await action(store_type(db))
        finally:
            await db.close()

    return asyncio.run(run())


def _with_keys(ctx: click.Context, action: Any) -> Any:
    """Run ``action(KeyAdmin)``: the same key operations as the admin API's."""
    from openfal.key_admin import KeyAdmin
    from openfal.store.api_keys import KeyStore

    return _with_store(ctx, lambda db: KeyAdmin(db, KeyStore(db)), action)


@keys.command("create")
@click.option("--name", required=True)
@click.option("--admin", is_flag=True, help="May see every key's requests and usage.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, admin: bool) -> None:
    """Create a key and print it (shown once)."""
    key, secret = _with_keys(ctx, lambda key_admin: key_admin.create(name, admin=admin))
    click.echo(secret)
    click.echo(f"key id {key.id} ({'admin' if admin else 'user'}) created; store the line above, it is not shown again", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    from openfal.key_admin import key_json

    rows = _with_keys(ctx, lambda key_admin: key_admin.list())
    if as_json:
        click.echo(json.dumps([key_json(k) for k in rows]))
        return
    now = time.time()
    for k in rows:
        state = "revoked" if not k.active else "expired" if k.expired(now) else "active"
        scope = ",".join(k.endpoints) if k.endpoints is not None else "all endpoints"
        click.echo(f"{k.id}\t{k.name}\t{'admin' if k.is_admin else 'user'}\t{state}\t{scope}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    if not _with_keys(ctx, lambda key_admin: key_admin.revoke(key_id)):
        click.echo(f"no active key {key_id}", err=True)
        sys.exit(1)
    click.echo(f"revoked {key_id}")


@keys.command("limits")
@click.argument("key_id")
@click.option("--max-concurrent", type=click.IntRange(1, 2**31 - 1), default=None, help="Requests of this key running at once (others wait).")
@click.option("--rpm", type=click.IntRange(1, 2**31 - 1), default=None, help="Submits per minute.")
@click.option("--endpoint", "endpoints", multiple=True, help="An endpoint pattern the key may use, e.g. 'fal-ai/flux-1/*' (repeatable).")
@click.option("--expires", type=click.DateTime(), default=None, help="When the key stops working (UTC), e.g. 2027-01-31.")
@click.option("--max-queued", type=click.IntRange(1, 2**31 - 1), default=None, help="Requests of this key waiting at once (more are refused 429).")
@click.pass_context
def keys_limits(
    ctx: click.Context,
    key_id: str,
    max_concurrent: int | None,
    rpm: int | None,
    endpoints: tuple[str, ...],
    expires: datetime | None,
    max_queued: int | None,
) -> None:
    """Set a key's limits (an omitted option lifts that limit)."""
    expires_at = expires.replace(tzinfo=UTC).timestamp() if expires else None
    limits = {"max_concurrent": max_concurrent, "rpm": rpm, "endpoints": endpoints or None, "expires_at": expires_at, "max_queued": max_queued}
    if _with_keys(ctx, lambda key_admin: key_admin.set_limits(key_id, limits)) is None:
        click.echo(f"no key {key_id}", err=True)
        sys.exit(1)
    shown = ",".join(endpoints) or "all"
    click.echo(
        f"{key_id}: max_concurrent={max_concurrent} rpm={rpm} endpoints={shown} expires={expires.isoformat() + 'Z' if expires else None}"
        f" max_queued={max_queued}"
    )


@keys.command("credit")
@click.argument("key_id")
@click.argument("dollars", type=float)
@click.pass_context
def keys_credit(ctx: click.Context, key_id: str, dollars: float) -> None:
    """Add credit to a key (it becomes credit-limited); negative debits."""
    key = _with_keys(ctx, lambda key_admin: key_admin.credit(key_id, dollars))
    if key is None:
        click.echo(f"no key {key_id}", err=True)
        sys.exit(1)
    click.echo(f"{key_id}: balance ${key.balance_micros / 1_000_000:.6f}")


@main.command()
@click.option("--key", "key_id", default=None, help="Only this key id.")
@click.option("--since", type=float, default=None, help="Unix seconds.")
@click.option("--until", type=float, default=None, help="Unix seconds.")
@click.option("--period", type=click.Choice(["hour", "day", "total"]), default="day", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def usage(ctx: click.Context, key_id: str | None, since: float | None, until: float | None, period: str, as_json: bool) -> None:
    """Usage per key, endpoint and period, from the ledger."""
    rows = _with_keys(ctx, lambda key_admin: key_admin.usage(key_id=key_id, since=since, until=until, period=period))
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo("period_start\tkey\tendpoint\trequests\tsucceeded\timages\tmegapixels\tvideo_s\tcost_usd")
    for r in rows:
        click.echo("\t".join(str(r[k]) for k in ["period_start", "key_id", "endpoint_id", "requests", "succeeded", "images", "megapixels", "video_seconds", "cost"]))


@main.group()
def webhooks() -> None:
    """The webhook delivery log."""


def _with_outbox(ctx: click.Context, action: Any) -> Any:
    from openfal.store.outbox import OutboxStore

    return _with_store(ctx, OutboxStore, action)


@webhooks.command("list")
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]), default=None)
@click.option("--request", "request_id", default=None, help="Only this request's deliveries.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def webhooks_list(ctx: click.Context, state: str | None, request_id: str | None, limit: int, as_json: bool) -> None:
    """Deliveries, newest first."""
    rows = _with_outbox(ctx, lambda outbox: outbox.recent(state=state, request_id=request_id, limit=limit))
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo("id\trequest\tstate\tattempts\tlast_status\turl\tlast_error")
    for r in rows:
        click.echo("\t".join(str(r[k]) for k in ["id", "request_id", "state", "attempts", "last_status", "url", "last_error"]))


@webhooks.command("redeliver")
@click.argument("delivery_id", type=int)
@click.pass_context
def webhooks_redeliver(ctx: click.Context, delivery_id: int) -> None:
    """Send a delivery again (a running server's deliverer picks it up within a second)."""
    if not _with_outbox(ctx, lambda outbox: outbox.redeliver(delivery_id)):
        click.echo(f"no webhook delivery {delivery_id}", err=True)
        sys.exit(1)
    click.echo(f"delivery {delivery_id} queued again")


@main.command("workers")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def workers_list(ctx: click.Context, as_json: bool) -> None:
    """Worker processes as they last reported (slots, busy, backend status)."""
    from openfal.store.workers import WorkerRegistry

    rows = _with_store(ctx, WorkerRegistry, lambda registry: registry.listing())
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo("id\thost\tpid\talive\tlast_seen_s_ago\tbackends (busy/slots)")
    now = time.time()
    for r in rows:
        backends = ", ".join(f"{name} {b['busy']}/{b['slots']}" for name, b in r["backends"].items())
        click.echo(f"{r['id']}\t{r['hostname']}\t{r['pid']}\t{'yes' if r['alive'] else 'no'}\t{now - r['last_seen']:.0f}\t{backends}")


def _register_models() -> None:
    try:
        from openfal.backends.local.cli import models
    except ImportError:  # pragma: no cover - the local backend is part of the package
        return
    main.add_command(models)


_register_models()
