"""Usage, analytics and request listings in fal's Platform API shapes, from the store's
reports (``openfal.store.reports``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from openfal.accounting import MICROS
from openfal.errors import InputInvalid
from openfal.platform_api.models import CURRENCY, Page, decode_cursor, encode_cursor, page
from openfal.platform_api.timeframes import Buckets
from openfal.store.reports import LineItem, Stats

#: the analytics metrics fal's ``expand`` selects
METRICS = (
    "request_count",
    "success_count",
    "user_error_count",
    "error_count",
    "p50_prepare_duration",
    "p75_prepare_duration",
    "p90_prepare_duration",
    "p50_duration",
    "p75_duration",
    "p90_duration",
)
#: what ``expand`` may also ask for besides metrics
SECTIONS = ("time_series", "summary")


def expansions(values: Sequence[str], allowed: Sequence[str]) -> set[str]:
    """fal's ``expand``: repeated or comma-separated names, each one it knows."""
    chosen = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = chosen - set(allowed)
    if unknown:
        raise InputInvalid([{"loc": ["query", "expand"], "msg": f"Unknown expansion {sorted(unknown)[0]!r}; one of {', '.join(allowed)}", "type": "enum"}])
    return chosen


def line_item_json(item: LineItem) -> dict[str, Any]:
    """One usage line item: ``quantity`` billing units at ``unit_price`` make ``cost``
    (the unit price is what the ledger charged per unit, so they always agree)."""
    cost = item.cost_micros / MICROS
    return {
        "endpoint_id": item.endpoint_id,
        "unit": item.unit,
        "quantity": round(item.quantity, 6),
        "unit_price": round(cost / item.quantity, 6) if item.quantity else 0.0,
        "cost": cost,
        "currency": CURRENCY,
        "auth_method": "api_key",
        "key_id": item.key_id,
        "request_count": item.requests,
    }


def time_series(buckets: Buckets, rows: Sequence[Any], render: Any, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], Page]:
    """Rows grouped into fal's ``[{bucket, results}]``, every bucket of the range listed
    (empty ones too, so a chart has no gaps), paged by bucket."""
    by_bucket: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_bucket[row.bucket].append(render(row))
    series = [{"bucket": buckets.label(i), "results": by_bucket.get(i, [])} for i in range(len(buckets.edges) - 1)]
    chosen = page(series, cursor, limit)
    return chosen.items, chosen


def stats_json(stats: Stats, metrics: set[str]) -> dict[str, Any]:
    values = {
        "request_count": stats.request_count,
        "success_count": stats.success_count,
        "user_error_count": stats.user_error_count,
        "error_count": stats.error_count,
        **{f"p{int(q * 100)}_prepare_duration": _seconds(v) for q, v in zip((0.5, 0.75, 0.9), stats.prepare, strict=True)},
        **{f"p{int(q * 100)}_duration": _seconds(v) for q, v in zip((0.5, 0.75, 0.9), stats.duration, strict=True)},
    }
    return {"endpoint_id": stats.endpoint_id, **{name: values[name] for name in METRICS if name in metrics}}


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def request_json(row: Any, *, payloads: bool) -> dict[str, Any]:
    """One request as fal's request listing shows it (``expand=payloads``: its input and
    output, unless they were not kept)."""
    duration = row.completed_at - row.started_at if row.completed_at is not None and row.started_at is not None else None
    item: dict[str, Any] = {
        "request_id": row.id,
        "endpoint_id": row.endpoint_id,
        "sent_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "ended_at": iso(row.completed_at),
        "status_code": row.result_status if row.status == "COMPLETED" else None,
        "duration": None if duration is None else round(duration, 6),
        "status": row.status,
        "error_type": row.error_type,
        "key_id": row.key_id,
    }
    if payloads:
        item["json_input"] = row.input
        item["json_output"] = row.result_body
    return item


def offset_page(rows: Sequence[Any], cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
    """A page of rows read with one extra (``limit + 1``): the extra says there is more."""
    offset = decode_cursor(cursor)
    more = len(rows) > limit
    return list(rows[:limit]), encode_cursor(offset + limit) if more else None
