"""The HTTP face of an ``openfal worker`` process, for its orchestrator and Prometheus:
``/health`` (liveness), ``/health/ready`` (readiness) and ``/metrics``.

It runs on the worker's own event loop, so a loop that stops turning fails liveness
by timing out, as a hung process should.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openfal.runtime import Runtime


def worker_app(runtime: Runtime) -> Starlette:
    async def live(request: Request) -> JSONResponse:
        """Live: every claim loop goes round and every engine answers (a restart mends
        neither otherwise). A database that is away is not a liveness failure: the loops
        retry, and a restart would not bring it back."""
        problems = [problem for worker in runtime.workers for problem in worker.unhealthy()]
        if problems:
            return JSONResponse({"status": "unhealthy", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> JSONResponse:
        """Ready: warmed (``OPENFAL_PRELOAD_MODELS`` loaded and compiled) and claiming
        (not draining after SIGTERM). An orchestrator rolls the next pod once this one is."""
        warming = runtime.warming()
        if warming:
            return JSONResponse({"status": "warming_up", "warming": warming}, status_code=503)
        if not runtime.workers or not all(worker.claiming for worker in runtime.workers):
            return JSONResponse({"status": "not_claiming"}, status_code=503)
        workers = [worker.worker_id for worker in runtime.workers]
        return JSONResponse({"status": "ok", "workers": workers, "endpoints": sorted(runtime.worker_endpoints or [])})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/health", live), Route("/health/ready", ready), Route("/metrics", metrics)])
