"""The admin API (admin keys only): keys, limits, credit, usage, the webhook delivery
log with redelivery. Also /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from openfal import metrics
from openfal.errors import Forbidden, RequestNotFound
from openfal.http.deps import current_key, runtime
from openfal.key_admin import KeyAdmin, key_json
from openfal.models import ApiKey
from openfal.store.api_keys import LIMITS
from openfal.validation import Text

router = APIRouter(prefix="/api/admin", tags=["admin"])
metrics_router = APIRouter(tags=["server"])


#: bounds that keep numbers inside what the database stores (INTEGER limits, BIGINT ids,
#: micro-dollars) and out of inf/nan (which JSON bodies may spell Infinity/NaN)
MAX_INT32 = 2**31 - 1
MAX_ID = 2**63 - 1
MAX_TIME = 1e11
MAX_DOLLARS = 1e9


async def admin_key(key: ApiKey | None = Depends(current_key)) -> ApiKey | None:
    if key is not None and not key.is_admin:
        raise Forbidden()
    return key


Pattern = Annotated[Text, Field(min_length=1, max_length=255)]


class LimitsIn(BaseModel):
    """A key's limits; an absent field lifts that limit."""

    max_concurrent: int | None = Field(None, ge=1, le=MAX_INT32)
    rpm: int | None = Field(None, ge=1, le=MAX_INT32)
    endpoints: list[Pattern] | None = Field(
        None, min_length=1, max_length=100, description="fnmatch patterns (fal-ai/flux-1/*) of the endpoints the key may use"
    )
    expires_at: float | None = Field(None, gt=0, le=MAX_TIME, description="unix time after which the key stops working")
    max_queued: int | None = Field(None, ge=1, le=MAX_INT32, description="requests the key may have waiting at once (more: 429)")
    commercial_only: bool = Field(False, description="only endpoints whose catalog licence allows commercial use (others: 403 naming it)")


class KeyIn(LimitsIn):
    name: Text = Field(min_length=1, max_length=255)
    admin: bool = False
    credit: float | None = Field(None, ge=0, le=MAX_DOLLARS, description="initial credit in dollars; absent: metered, not limited")


class CreditIn(BaseModel):
    amount: float = Field(ge=-MAX_DOLLARS, le=MAX_DOLLARS, description="dollars to add (negative to debit)")


def _admin(request: Request) -> KeyAdmin:
    rt = runtime(request)
    return KeyAdmin(rt.db, rt.keys, forget=rt.auth.forget)


@router.get("/keys")
async def list_keys(request: Request, _: ApiKey | None = Depends(admin_key)) -> list[dict[str, Any]]:
    return [key_json(k) for k in await _admin(request).list()]


@router.post("/keys")
async def create_key(body: KeyIn, request: Request, _: ApiKey | None = Depends(admin_key)) -> dict[str, Any]:
    limits = body.model_dump(include=set(LIMITS))
    key, secret = await _admin(request).create(body.name, admin=body.admin, limits=limits, credit=body.credit)
    return {**key_json(key), "key": secret}


@router.patch("/keys/{key_id}")
async def set_limits(key_id: str, body: LimitsIn, request: Request, _: ApiKey | None = Depends(admin_key)) -> dict[str, Any]:
    key = await _admin(request).set_limits(key_id, body.model_dump(include=set(LIMITS)))
    if key is None:
        raise RequestNotFound(f"Key {key_id} not found")
    return key_json(key)


@router.post("/keys/{key_id}/revoke")
async def revoke(key_id: str, request: Request, _: ApiKey | None = Depends(admin_key)) -> dict[str, Any]:
    if not await _admin(request).revoke(key_id):
        raise RequestNotFound(f"No active key {key_id}")
    return {"id": key_id, "active": False}


@router.post("/keys/{key_id}/credit")
async def add_credit(key_id: str, body: CreditIn, request: Request, _: ApiKey | None = Depends(admin_key)) -> dict[str, Any]:
    key = await _admin(request).credit(key_id, body.amount)
    if key is None:
        raise RequestNotFound(f"Key {key_id} not found")
    return key_json(key)


@router.get("/usage")
async def usage(
    request: Request,
    key_id: str | None = None,
    since: float | None = Query(None, ge=0, le=MAX_TIME, description="unix seconds"),
    until: float | None = Query(None, ge=0, le=MAX_TIME, description="unix seconds"),
    period: str = Query("day", pattern="^(hour|day|total)$"),
    _: ApiKey | None = Depends(admin_key),
) -> list[dict[str, Any]]:
    return await _admin(request).usage(key_id=key_id, since=since, until=until, period=period)


@router.get("/webhooks")
async def webhook_log(
    request: Request,
    state: str | None = Query(None, pattern="^(pending|delivered|failed)$"),
    request_id: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=0, le=MAX_ID, description="only deliveries with a smaller id (paging)"),
    _: ApiKey | None = Depends(admin_key),
) -> list[dict[str, Any]]:
    """Webhook deliveries, newest first: state, attempts, the last answer or error."""
    return await runtime(request).outbox.recent(state=state, request_id=request_id, limit=limit, before=before)


@router.post("/webhooks/{delivery_id}/redeliver")
async def redeliver(
    request: Request, delivery_id: int = Path(ge=1, le=MAX_ID), _: ApiKey | None = Depends(admin_key)
) -> dict[str, Any]:
    """Queue a delivery again now, with a fresh round of attempts."""
    if not await runtime(request).outbox.redeliver(delivery_id):
        raise RequestNotFound(f"Webhook delivery {delivery_id} not found")
    return {"id": delivery_id, "state": "pending"}


@router.get("/queues")
async def queues(request: Request, _: ApiKey | None = Depends(admin_key)) -> dict[str, list[dict[str, Any]]]:
    """The console's queue view. ``pools``: each worker pool of ``OPENFAL_POOLS``, from
    the ``openfal_pool_queue`` view KEDA reads (requests waiting and running, the oldest
    wait) with its endpoints and the live workers that claim only them (workers, slots,
    busy slots). ``backends``: the same counts per backend, pooled or not (Prometheus has
    both as gauges)."""
    rt = runtime(request)
    members = await rt.pool_queues.members()
    pool_capacity = await rt.registry.pool_capacity(members)
    pools = [
        {
            "pool": q.pool,
            "queued": q.queued,
            "running": q.running,
            "oldest_wait_seconds": round(q.oldest_wait_seconds, 3),
            **pool_capacity.get(q.pool, {"workers": 0, "slots": 0, "busy": 0}),
            "endpoints": sorted(members.get(q.pool, ())),
        }
        for q in await rt.pool_queues.queues()
    ]
    counts = await rt.requests.counts_by_backend()
    capacity = await rt.registry.capacity()
    backends = [
        {
            "backend": backend,
            "queued": counts.get(("IN_QUEUE", backend), 0),
            "running": counts.get(("IN_PROGRESS", backend), 0),
            "workers": capacity.get(backend, {}).get("workers", 0),
            "slots": capacity.get(backend, {}).get("slots", 0),
            "busy": capacity.get(backend, {}).get("busy", 0),
            "endpoints": [route.endpoint_id for route in rt.router.endpoints() if route.backend == backend],
        }
        for backend in rt.backends
    ]
    return {"pools": pools, "backends": backends}


@router.get("/workers")
async def worker_list(request: Request, _: ApiKey | None = Depends(admin_key)) -> list[dict[str, Any]]:
    """Processes running workers as they last reported: slots, busy slots and each
    backend's status (loaded models, upstream key health); ``alive`` false once silent."""
    return await runtime(request).registry.listing()


@metrics_router.get("/metrics")
async def prometheus(request: Request, _: ApiKey | None = Depends(admin_key)) -> Response:
    """Admin keys only: per-endpoint counts and queue depths are a reseller's business
    figures (Prometheus sends the key as ``authorization: {credentials: KEY}``)."""
    counts = await runtime(request).requests.counts_by_backend()
    capacity = await runtime(request).registry.capacity()
    for backend in runtime(request).backends:
        metrics.QUEUE_DEPTH.labels(backend).set(counts.get(("IN_QUEUE", backend), 0))
        metrics.RUNNING.labels(backend).set(counts.get(("IN_PROGRESS", backend), 0))
        metrics.CLUSTER_SLOTS.labels(backend).set(capacity.get(backend, {}).get("slots", 0))
        metrics.CLUSTER_BUSY.labels(backend).set(capacity.get(backend, {}).get("busy", 0))
    for pool in await runtime(request).pool_queues.queues():
        metrics.POOL_QUEUED.labels(pool.pool).set(pool.queued)
        metrics.POOL_RUNNING.labels(pool.pool).set(pool.running)
        metrics.POOL_OLDEST_WAIT.labels(pool.pool).set(pool.oldest_wait_seconds)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
