"""Prices, credit and the usage ledger.

Money is integer micro-dollars, so the ledger balances exactly. A request's price is
*reserved* when it is submitted (in the transaction that stores it) and *settled*
exactly once in the transaction that completes it: the reserve is released and the
price of what was delivered is charged, nothing for failures, start timeouts and
cancels. Keys without a balance are metered the same way but never refused.

Prices default to fal's list prices (per megapixel for FLUX.1, per image for Kontext,
per video for LTX), where one megapixel is 1024x1024 delivered pixels; override them
with ``OPENFAL_PRICES`` (endpoint pattern -> {per_request, per_image, per_megapixel,
per_video_second} in dollars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from openfal.endpoints.schemas import IMAGE_SIZE_PRESETS, ImageSize, resolve_image_size
from openfal.models import RequestRecord, Usage
from openfal.store import ledger
from openfal.store.changes import Transaction

MICROS = 1_000_000
MEGAPIXEL = 1024 * 1024
#: what a video is assumed to last when reserving (settlement uses the real length)
RESERVE_VIDEO_SECONDS = 5.0


#: a price component's billing unit, as fal's pricing API names units, in the order the
#: main one is chosen (a price is quoted in its first non-zero component)
UNITS = (("per_megapixel", "megapixels"), ("per_image", "image"), ("per_video_second", "second"), ("per_request", "request"))


@dataclass(frozen=True, slots=True)
class Price:
    per_request: float = 0.0
    per_image: float = 0.0
    per_megapixel: float = 0.0
    per_video_second: float = 0.0

    @property
    def unit(self) -> str:
        """The billing unit the price is quoted in (fal's ``unit``): its first non-zero
        component; a free endpoint is quoted per request."""
        return next((unit for field, unit in UNITS if getattr(self, field)), "request")

    @property
    def unit_price(self) -> float:
        """Dollars per ``unit`` (fal's ``unit_price``)."""
        return next((getattr(self, field) for field, unit in UNITS if unit == self.unit), 0.0)

    def units(self, usage: Usage) -> float:
        """How many billing units a successful request's delivery is: what
        ``x-fal-billable-units`` says and usage line items add up (a per-request price
        bills one unit per request)."""
        return {"megapixels": usage.megapixels, "image": float(usage.images), "second": usage.video_seconds, "request": 1.0}[self.unit]

    def micros(self, usage: Usage) -> int:
        dollars = (
            self.per_request
            + self.per_image * usage.images
            + self.per_megapixel * usage.megapixels
            + self.per_video_second * usage.video_seconds
        )
        return round(dollars * MICROS)


def default_prices() -> dict[str, Price]:
    """fal's list prices of every catalog endpoint (the families declare them)."""
    from openfal.endpoints.catalog import CATALOG

    return {**{spec.endpoint_id: Price(**spec.price) for spec in CATALOG.values() if spec.price}, "openfal/utils/*": Price()}


DEFAULT_PRICES: dict[str, Price] = default_prices()


class PriceList:
    def __init__(self, overrides: dict[str, dict[str, float]] | None = None) -> None:
        table = {**DEFAULT_PRICES, **{p: Price(**v) for p, v in (overrides or {}).items()}}
        #: exact ids first, then the most specific pattern
        self.table = sorted(table.items(), key=lambda item: ("*" in item[0], -len(item[0])))

    def price(self, endpoint_id: str) -> Price:
        return next((price for pattern, price in self.table if fnmatchcase(endpoint_id, pattern)), Price())

    def estimate(self, endpoint_id: str, input: dict[str, Any]) -> int:
        """What to reserve at submit, from the input alone."""
        return self.price(endpoint_id).micros(expected(input))

    def charge(self, endpoint_id: str, delivered: Usage) -> int:
        return self.price(endpoint_id).micros(delivered)


def expected(input: dict[str, Any]) -> Usage:
    """What a request will deliver if it succeeds (images of the asked size)."""
    count = input.get("num_images")
    images = count if isinstance(count, int) and count > 0 else 1
    size = input.get("image_size")
    try:
        if isinstance(size, dict):
            width, height = resolve_image_size(ImageSize(**size))
        elif isinstance(size, str) and size in IMAGE_SIZE_PRESETS:
            width, height = IMAGE_SIZE_PRESETS[size]
        else:
            width, height = 1024, 1024
    except Exception:
        width, height = 1024, 1024
    return Usage(images=images, megapixels=images * _megapixels(width, height), video_seconds=RESERVE_VIDEO_SECONDS)


def delivered(result_body: Any, video_seconds: float = 0.0) -> Usage:
    """What a completed result actually delivered, read from the result itself (the
    backend's own Usage counts megapixels its way; billing counts them one way for all)."""
    if not isinstance(result_body, dict):
        return Usage()
    images = [i for i in result_body.get("images") or [] if isinstance(i, dict)]
    megapixels = sum(_megapixels(int(i.get("width") or 1024), int(i.get("height") or 1024)) for i in images)
    has_video = isinstance(result_body.get("video"), dict)
    return Usage(images=len(images), megapixels=megapixels, video_seconds=video_seconds if has_video else 0.0)


def _megapixels(width: int, height: int) -> float:
    return math.ceil(width * height / MEGAPIXEL * 1000) / 1000


class Accounts:
    """Reserve and settle: money moves (or not) with the request change it belongs
    to (a reserve in the submit's statement, a settlement in the caller's transaction)."""

    def __init__(self, prices: PriceList) -> None:
        self.prices = prices

    def estimate(self, endpoint_id: str, data: dict[str, Any]) -> int:
        """What a submit reserves from its key's balance (the store takes it with the
        request, or refuses both with InsufficientCredit)."""
        return self.prices.estimate(endpoint_id, data)

    def billable_units(self, endpoint_id: str, result_body: Any, video_seconds: float = 0.0) -> float:
        """The billing units a successful result delivered (``x-fal-billable-units``)."""
        return round(self.prices.price(endpoint_id).units(delivered(result_body, video_seconds)), 6)

    async def settle(self, tx: Transaction, record: RequestRecord, *, video_seconds: float = 0.0) -> None:
        """Release the reserve; charge what was delivered if the request succeeded. The
        charge row also keeps what the Platform API reads back: the billing unit and
        units, the status code, and the seconds queued and run."""
        got = delivered(record.result_body, video_seconds) if record.error is None else Usage()
        price = self.prices.price(record.endpoint_id)
        charge = price.micros(got) if record.error is None else 0
        units = round(price.units(got), 6) if record.error is None else 0.0
        billed = ledger.Billed(unit=price.unit, units=units, status_code=record.result_status or 200)
        await ledger.settle(tx, record, reserved=record.reserved_micros or 0, charge=charge, got=got, billed=billed)


#: kept here too: callers that price things also top keys up
credit = ledger.credit
