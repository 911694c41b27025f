"""``GET /v1/models``: the endpoints this server serves as fal's model search lists
them (endpoint_id, metadata, optionally the OpenAPI document), with find, search and
cursor pagination, and ``GET /v1/models/pricing`` / ``POST .../estimate`` from the
prices the ledger charges (``openfal.accounting``)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from openfal.accounting import PriceList
from openfal.endpoints.catalog import EndpointSpec
from openfal.errors import InputInvalid
from openfal.routing import Route

CURRENCY = "USD"
#: fal's statuses of a model; every endpoint openfal serves is active
STATUSES = ("active", "deprecated")
#: the most endpoint ids one call may name (fal: 1-50)
MAX_IDS = 50


def category(spec: EndpointSpec) -> str:
    """fal's category from what the endpoint takes and makes."""
    fields = spec.input_model.model_fields
    takes_image = any(name in fields for name in ("image_url", "image_urls"))
    if spec.kind == "video":
        return "image-to-video" if takes_image else "text-to-video"
    if spec.kind == "image":
        return "image-to-image" if takes_image else "text-to-image"
    return "utility"


def metadata(route: Route, base_url: str) -> dict[str, Any]:
    """fal's model metadata, with the licence the catalog records (openfal's ``licence``
    beside fal's ``license_type``)."""
    spec = route.spec
    assert spec is not None
    licence = spec.licence
    return {
        "display_name": spec.title,
        "category": category(spec),
        "description": (spec.input_model.__doc__ or spec.title).strip(),
        "status": "active",
        "tags": [spec.kind, route.backend],
        "updated_at": None,
        "is_favorited": None,
        "thumbnail_url": None,
        "model_url": f"{base_url}/openapi/queue/openapi.json?endpoint_id={spec.endpoint_id}",
        "license_type": None if licence is None else ("commercial" if licence.commercial else "research"),
        "licence": None if licence is None else licence.as_json(),
        "date": None,
        "highlighted": False,
        "kind": "inference",
        "pinned": False,
    }


@dataclass(frozen=True, slots=True)
class Search:
    endpoint_ids: tuple[str, ...] | None = None
    q: str | None = None
    category: str | None = None
    status: str | None = None

    def matches(self, route: Route) -> bool:
        spec = route.spec
        assert spec is not None
        if self.endpoint_ids is not None and route.endpoint_id not in self.endpoint_ids:
            return False
        if self.status is not None and self.status != "active":
            return False
        if self.category is not None and category(spec) != self.category:
            return False
        if self.q:
            text = f"{spec.endpoint_id} {spec.title} {category(spec)}".lower()
            return all(word in text for word in self.q.lower().split())
        return True


def endpoint_ids(values: Sequence[str], field: str = "endpoint_id") -> tuple[str, ...] | None:
    """fal's ``endpoint_id`` filter: repeated or comma-separated, 1-50 ids; absent: None."""
    ids = tuple(dict.fromkeys(part.strip() for value in values for part in value.split(",") if part.strip()))
    if not values:
        return None
    if not ids or len(ids) > MAX_IDS:
        raise InputInvalid([{"loc": ["query", field], "msg": f"Between 1 and {MAX_IDS} endpoint ids", "type": "value_error"}])
    return ids


def encode_cursor(offset: int) -> str:
    """fal's cursors are opaque strings encoding the page: here, the offset."""
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        offset = -1
    if not 0 <= offset < 2**31:
        raise InputInvalid([{"loc": ["query", "cursor"], "msg": "Not a cursor this server gave", "type": "value_error"}])
    return offset


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def page(items: Sequence[Any], cursor: str | None, limit: int) -> Page:
    """One page of a list known in full."""
    offset = decode_cursor(cursor)
    chosen = list(items[offset : offset + limit])
    more = offset + limit < len(items)
    return Page(chosen, encode_cursor(offset + limit) if more else None)


def search(routes: Sequence[Route], query: Search, cursor: str | None, limit: int) -> Page:
    """The served endpoints the search matches, a page of them, in catalog order."""
    return page([r for r in routes if r.spec is not None and query.matches(r)], cursor, limit)


def model_json(route: Route, base_url: str, openapi: Callable[[EndpointSpec], dict[str, Any]] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"endpoint_id": route.endpoint_id, "metadata": metadata(route, base_url)}
    if openapi is not None:
        assert route.spec is not None
        body["openapi"] = openapi(route.spec)
    return body


# -- pricing ------------------------------------------------------------------------


def price_json(prices: PriceList, endpoint_id: str) -> dict[str, Any]:
    """fal's price entry: the unit the ledger bills in and its price."""
    price = prices.price(endpoint_id)
    return {"endpoint_id": endpoint_id, "unit_price": price.unit_price, "unit": price.unit, "currency": CURRENCY}


def estimate(prices: PriceList, estimate_type: str, quantities: dict[str, float], historical: dict[str, float]) -> float:
    """fal's two estimates: ``unit_price`` (units x unit price) and
    ``historical_api_price`` (calls x the mean cost of a call to the endpoint in the
    ledger; an endpoint with no history is priced at one unit per call)."""
    total = 0.0
    for endpoint_id, quantity in quantities.items():
        price = prices.price(endpoint_id)
        per_call = historical.get(endpoint_id, price.unit_price) if estimate_type == "historical_api_price" else price.unit_price
        total += per_call * quantity
    return round(total, 6)
