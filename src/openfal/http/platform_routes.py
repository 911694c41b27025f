"""fal's Platform API under ``/v1`` (``https://api.fal.ai/v1`` with openfal as the
base URL): models with search, pagination and OpenAPI; pricing and estimates; usage
line items; analytics; requests by endpoint; payload deletion; keys; billing. Thin:
``openfal.platform_api`` does the work. ``GET /v1/models`` and ``/v1/models/{id}``
also answer OpenAI's SDKs (``object``/``data`` beside fal's fields).

Errors are fal's (``detail``, ``error_type`` and ``X-Fal-Error-Type``) with the
Platform API's ``error: {type, message}`` beside them, which OpenAI's SDKs read too."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from openfal.endpoints.catalog import CATALOG
from openfal.errors import Forbidden, RequestNotFound
from openfal.http.deps import base_url, current_key, json_body, runtime
from openfal.http.openapi import endpoint_openapi
from openfal.key_admin import KeyAdmin, key_json
from openfal.models import ApiKey
from openfal.platform_api import access, models, reports
from openfal.platform_api.timeframes import Buckets, buckets, parse_time, parse_zone
from openfal.store import reports as store_reports
from openfal.validation import Text, parse_body

router = APIRouter(prefix="/v1", tags=["platform"])

Ids = Annotated[list[str] | None, Query(max_length=50)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=64)]
# -- models ---------------------------------------------------------------------------


def _openai_names(request: Request) -> list[str]:
    """What OpenAI's SDKs list: the Images API aliases, then every image endpoint."""
    rt = runtime(request)
    names = dict.fromkeys([*rt.settings.openai_model_aliases, *rt.settings.openai_edit_model_aliases])
    for route in rt.router.endpoints():
        if route.spec is not None and route.spec.kind == "image":
            names[route.endpoint_id] = None
    return list(names)


def _openai_model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "openfal"}


@router.get("/models", summary="Models: list, find, search (fal's model search; OpenAI's models.list)")
async def list_models(
    request: Request,
    endpoint_id: Ids = None,
    q: str | None = Query(None, max_length=200),
    category: str | None = Query(None, max_length=64),
    status: Literal["active", "deprecated"] | None = None,
    expand: Ids = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    _: ApiKey | None = Depends(current_key),
) -> dict[str, Any]:
    """fal's ``{models, next_cursor, has_more}`` (``expand=openapi-3.0`` embeds each
    endpoint's OpenAPI) with OpenAI's ``{object: "list", data}`` beside it."""
    wanted = reports.expansions(expand or [], ("openapi-3.0",))
    search = models.Search(models.endpoint_ids(endpoint_id or []), q, category, status)
    found = models.search(runtime(request).router.endpoints(), search, cursor, limit)
    server = base_url(request)
    openapi = (lambda spec: endpoint_openapi(spec, server)) if "openapi-3.0" in wanted else None
    return {
        "models": [models.model_json(route, server, openapi) for route in found.items],
        "next_cursor": found.next_cursor,
        "has_more": found.has_more,
        "object": "list",
        "data": [_openai_model(name) for name in _openai_names(request)],
    }


# -- pricing --------------------------------------------------------------------------


@router.get("/models/pricing", summary="Unit prices (the prices the ledger charges)")
async def pricing(request: Request, endpoint_id: Ids = None, limit: Limit = 50, cursor: Cursor = None, _: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    ids = models.endpoint_ids(endpoint_id or []) or tuple(route.endpoint_id for route in runtime(request).router.endpoints())
    prices = runtime(request).accounts.prices
    chosen = models.page([models.price_json(prices, i) for i in ids], cursor, limit)
    return {"prices": chosen.items, "next_cursor": chosen.next_cursor, "has_more": chosen.has_more}


class CallQuantity(BaseModel):
    call_quantity: float = Field(ge=0, le=1e9)


class UnitQuantity(BaseModel):
    unit_quantity: float = Field(ge=0, le=1e12)


EndpointKey = Annotated[Text, Field(min_length=1, max_length=255)]


class HistoricalEstimate(BaseModel):
    estimate_type: Literal["historical_api_price"]
    endpoints: dict[EndpointKey, CallQuantity] = Field(min_length=1, max_length=50)


class UnitEstimate(BaseModel):
    estimate_type: Literal["unit_price"]
    endpoints: dict[EndpointKey, UnitQuantity] = Field(min_length=1, max_length=50)


class Estimate(BaseModel):
    body: HistoricalEstimate | UnitEstimate = Field(discriminator="estimate_type")


#: how far back the historical estimate looks
HISTORY_SECONDS = 30 * 86400


@router.post("/models/pricing/estimate", summary="Estimate a cost (historical_api_price or unit_price)")
async def estimate(request: Request, _: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    raw = await json_body(request)
    body = parse_body(Estimate, {"body": raw}).body
    rt = runtime(request)
    if isinstance(body, HistoricalEstimate):
        quantities = {e: q.call_quantity for e, q in body.endpoints.items()}
        history = await store_reports.mean_call_cost(rt.db, list(quantities), time.time() - HISTORY_SECONDS, time.time() + 1)
    else:
        quantities, history = {e: q.unit_quantity for e, q in body.endpoints.items()}, {}
    total = models.estimate(rt.accounts.prices, body.estimate_type, quantities, history)
    return {"estimate_type": body.estimate_type, "total_cost": total, "currency": models.CURRENCY}


# -- usage and analytics --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """What a usage or analytics call asks: its buckets, the rows it may read (a user
    key only its own), ``expand`` and the page of buckets."""

    span: Buckets
    filters: store_reports.Filters
    expand: list[str]
    limit: int
    cursor: str | None


async def report(
    endpoint_id: Ids = None,
    expand: Ids = None,
    key_id: str | None = Query(None, max_length=64, description="one key's data (admin keys; fal's user filter)"),
    start: str | None = Query(None, max_length=64, description="ISO 8601; default 24 hours before end"),
    end: str | None = Query(None, max_length=64, description="ISO 8601, exclusive; default now"),
    timezone: str | None = Query(None, max_length=64, description="IANA name the buckets follow; default UTC"),
    timeframe: Literal["minute", "hour", "day", "week", "month"] | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    caller: ApiKey | None = Depends(current_key),
) -> Report:
    span = buckets(start, end, timeframe=timeframe, timezone=timezone)
    filters = store_reports.Filters(span.start, span.end, access.owner_filter(caller, key_id), models.endpoint_ids(endpoint_id or []))
    return Report(span, filters, expand or [], limit, cursor)


@router.get("/models/usage", summary="Usage line items: billing units x unit price")
async def usage(request: Request, asked: Report = Depends(report)) -> dict[str, Any]:
    """``time_series`` (default) of ``{bucket, results: [line items]}`` and, with
    ``expand=summary``, the range's line items; a user key sees its own."""
    wanted = reports.expansions(asked.expand, reports.SECTIONS) or {"time_series"}
    db = runtime(request).db
    answer: dict[str, Any] = {"next_cursor": None, "has_more": False}
    if "time_series" in wanted:
        rows = await store_reports.usage(db, asked.filters, asked.span.edges)
        series, chosen = reports.time_series(asked.span, rows, reports.line_item_json, asked.cursor, asked.limit)
        answer |= {"time_series": series, "next_cursor": chosen.next_cursor, "has_more": chosen.has_more}
    if "summary" in wanted:
        answer["summary"] = [reports.line_item_json(item) for item in await store_reports.usage(db, asked.filters, None)]
    return answer


@router.get("/models/analytics", summary="Analytics: counts by outcome, queue-wait and run-time percentiles")
async def analytics(request: Request, asked: Report = Depends(report)) -> dict[str, Any]:
    """``expand`` names the metrics (default all ten) and ``summary``; ``time_series``
    is always given. Buckets follow ``timezone``; seconds throughout."""
    wanted = reports.expansions(asked.expand, (*reports.METRICS, *reports.SECTIONS))
    metrics = (wanted & set(reports.METRICS)) or set(reports.METRICS)
    db = runtime(request).db
    rows = await store_reports.analytics(db, asked.filters, asked.span.edges)
    series, chosen = reports.time_series(asked.span, rows, lambda s: reports.stats_json(s, metrics), asked.cursor, asked.limit)
    answer: dict[str, Any] = {"time_series": series, "next_cursor": chosen.next_cursor, "has_more": chosen.has_more, "timeframe": asked.span.timeframe}
    if "summary" in wanted:
        answer["summary"] = [reports.stats_json(s, metrics) for s in await store_reports.analytics(db, asked.filters, None)]
    return answer


@router.get("/models/requests/by-endpoint", summary="Requests, with filters")
async def requests_by_endpoint(
    request: Request,
    endpoint_id: Ids = None,
    request_id: Ids = None,
    expand: Ids = None,
    key_id: str | None = Query(None, max_length=64),
    start: str | None = Query(None, max_length=64),
    end: str | None = Query(None, max_length=64),
    status: Literal["success", "error", "user_error"] | None = None,
    sort_by: Literal["ended_at", "duration"] = "ended_at",
    limit: Limit = 50,
    cursor: Cursor = None,
    caller: ApiKey | None = Depends(current_key),
) -> dict[str, Any]:
    """Newest end (or longest run) first; ``expand=payloads`` adds input and output."""
    wanted = reports.expansions(expand or [], ("payloads",))
    utc = parse_zone("UTC")
    filters = store_reports.RequestFilters(
        start=parse_time(start, "start", utc),
        end=parse_time(end, "end", utc),
        key_id=access.owner_filter(caller, key_id),
        endpoint_ids=models.endpoint_ids(endpoint_id or []),
        status=status,
        request_ids=models.endpoint_ids(request_id or [], "request_id"),
    )
    offset = models.decode_cursor(cursor)
    rows = await store_reports.request_page(runtime(request).db, filters, sort_by=sort_by, offset=offset, limit=limit)
    items, next_cursor = reports.offset_page(rows, cursor, limit)
    return {"items": [reports.request_json(r, payloads="payloads" in wanted) for r in items], "next_cursor": next_cursor, "has_more": next_cursor is not None}


@router.delete("/models/requests/{request_id}/payloads", summary="Delete a request's payloads and output files")
async def delete_payloads(request_id: str, request: Request, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    """fal's payload deletion: the input and result are forgotten and the request's
    output files deleted (files it was given as input are not: others may use them)."""
    rt = runtime(request)
    record = await rt.requests.get(request_id) if len(request_id) <= 64 else None
    if record is None or not access.may_read_owned(caller, record.key_id):
        raise RequestNotFound(f"Request {request_id} not found")
    if await rt.requests.drop_payloads(request_id) is None:
        raise RequestNotFound(f"Request {request_id} has not completed: its payloads are still in use")
    results = []
    for media_key in await rt.media_index.of_request(request_id):
        link = rt.media.url(media_key, base_url(request))
        try:
            await rt.media.delete(media_key)
            await rt.media_index.forget([media_key])
            results.append({"link": link, "exception": None})
        except Exception as exc:  # reported per file, as fal does
            results.append({"link": link, "exception": f"{type(exc).__name__}: {exc}"})
    return {"cdn_delete_results": results}


# -- keys and billing -----------------------------------------------------------------


def _admin(request: Request) -> KeyAdmin:
    rt = runtime(request)
    return KeyAdmin(rt.db, rt.keys, forget=rt.auth.forget)


def platform_key_json(key: ApiKey) -> dict[str, Any]:
    """fal's key entry (key_id, alias, scope, created_at) with openfal's limits beside."""
    return {**key_json(key), "key_id": key.id, "alias": key.name, "scope": "ADMIN" if key.is_admin else "API", "created_at": reports.iso(key.created_at)}


@router.get("/keys", summary="API keys (admin)")
async def list_platform_keys(request: Request, limit: Limit = 50, cursor: Cursor = None, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    access.require_admin(caller)
    chosen = models.page([platform_key_json(k) for k in await _admin(request).list()], cursor, limit)
    return {"keys": chosen.items, "next_cursor": chosen.next_cursor, "has_more": chosen.has_more}


class NewKey(BaseModel):
    alias: Text = Field(min_length=1, max_length=255)
    scope: Literal["API", "ADMIN"] = "API"
    credit: float | None = Field(None, ge=0, le=1e9, description="opening credit in dollars (absent: metered only)")
    commercial_only: bool = Field(False, description="only endpoints whose licence allows commercial use")
    max_concurrent: int | None = Field(None, ge=1, le=2**31 - 1)
    rpm: int | None = Field(None, ge=1, le=2**31 - 1)


@router.post("/keys", summary="Create an API key (admin); its secret is shown once")
async def create_platform_key(request: Request, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    access.require_admin(caller)
    body = parse_body(NewKey, await json_body(request))
    limits = {"max_concurrent": body.max_concurrent, "rpm": body.rpm, "commercial_only": body.commercial_only}
    key, secret = await _admin(request).create(body.alias, admin=body.scope == "ADMIN", limits=limits, credit=body.credit)
    key_id, _, key_secret = secret.partition(":")
    return {"key_id": key_id, "key_secret": key_secret, "key": secret, **platform_key_json(key)}


@router.delete("/keys/{key_id}", summary="Revoke an API key (admin)", status_code=204)
async def revoke_platform_key(key_id: str, request: Request, caller: ApiKey | None = Depends(current_key)) -> Response:
    access.require_admin(caller)
    if len(key_id) > 64 or not await _admin(request).revoke(key_id):
        raise RequestNotFound(f"No active key {key_id}")
    return Response(status_code=204)


@router.get("/account/billing", summary="The caller's balance (expand=credits)")
async def billing(request: Request, expand: Ids = None, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    wanted = reports.expansions(expand or [], ("credits",))
    if caller is None:
        raise Forbidden("Billing belongs to a key: this server runs with authentication off")
    fresh = await runtime(request).keys.get(caller.id) or caller
    answer: dict[str, Any] = {"username": fresh.name, "key_id": fresh.id}
    if "credits" in wanted:
        balance = None if fresh.balance_micros is None else fresh.balance_micros / 1_000_000
        answer["credits"] = {"current_balance": balance, "currency": models.CURRENCY}
    return answer


# -- one model (last: its path would take the routes above) ---------------------------


@router.get("/models/{model:path}", summary="One model (OpenAI's models.retrieve; fal's fields for endpoints)")
async def one_model(model: str, request: Request, _: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    names = _openai_names(request)
    spec = CATALOG.get(model)
    served = {route.endpoint_id: route for route in runtime(request).router.endpoints()}
    if model not in names and model not in served:
        raise ModelNotFound(f"The model '{model}' does not exist")
    body = _openai_model(model)
    if model in served and spec is not None:
        body |= models.model_json(served[model], base_url(request), None)
    return body


class ModelNotFound(RequestNotFound):
    """No such model."""
