"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from openfal import __version__, log_redaction
from openfal.config import Settings
from openfal.http import (
    admin_routes,
    media_access_routes,
    misc_routes,
    openai_routes,
    platform_routes,
    playground,
    queue_routes,
    realtime_routes,
    relay_routes,
    storage_routes,
    stream_routes,
)
from openfal.http.errors import HANDLERS
from openfal.http.guard import RequestGuard
from openfal.http.hot_routes import HotRoutes
from openfal.http.middleware import RequestIdMiddleware
from openfal.http.proxy import FalProxyMiddleware
from openfal.runtime import Runtime

#: in the order the router tries them
ROUTERS = (
    playground.router,
    misc_routes.router,
    admin_routes.router,
    admin_routes.metrics_router,
    platform_routes.router,  # before the OpenAI routes: /v1/models answers both
    media_access_routes.router,
    storage_routes.router,
    relay_routes.router,
    openai_routes.router,
    realtime_routes.router,
    stream_routes.router,  # before the queue's catch-alls
    queue_routes.router,
)
#: response headers fal's JS client (or a browser app) reads
EXPOSED_HEADERS = ("x-fal-request-id", "x-fal-error-type", "x-fal-request-timeout-type", "idempotent-replayed", "retry-after", "etag")


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or (runtime.settings if runtime else Settings())
    rt = runtime or Runtime(settings)
    log_redaction.install()  # uvicorn logs handshakes' query strings: realtime tokens

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start(workers=settings.in_process_workers)
        try:
            yield
        finally:
            await rt.stop()

    otel = settings.otel
    app = FastAPI(
        title="openfal",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    app.state.runtime = rt
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    app.add_middleware(HotRoutes, routers=ROUTERS)  # submit and status, answered before routing
    app.add_middleware(RequestGuard)  # NUL, the admin door and body bounds, on the path a proxied call names
    app.add_middleware(FalProxyMiddleware)  # a proxied call is routed as the call it names
    app.add_middleware(RequestIdMiddleware)
    if settings.cors_origins:
        # outermost, so errors (401, 422) reach browser apps with their bodies too. Keys
        # travel in the Authorization header, never in cookies: no origin gets ambient
        # credentials, so allowing every origin is safe.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
    for router in ROUTERS:
        app.include_router(router)
    return app
