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
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from openfal.endpoints.schemas import IMAGE_SIZE_PRESETS, ImageSize, resolve_image_size
from openfal.errors import InsufficientCredit, RateLimited
from openfal.models import ApiKey, RequestRecord, Usage
from openfal.store import ledger as store_ledger
from openfal.store.schema import api_keys, ledger, requests

MICROS = 1_000_000
MEGAPIXEL = 1024 * 1024
#: what a video is assumed to last when reserving (settlement uses the real length)
RESERVE_VIDEO_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Price:
    per_request: float = 0.0
    per_image: float = 0.0
    per_megapixel: float = 0.0
    per_video_second: float = 0.0

    def micros(self, usage: Usage) -> int:
        dollars = (
            self.per_request
            + self.per_image * usage.images
            + self.per_megapixel * usage.megapixels
            + self.per_video_second * usage.video_seconds
        )
        return round(dollars * MICROS)


DEFAULT_PRICES: dict[str, Price] = {
    "fal-ai/flux-1/dev": Price(per_megapixel=0.025),
    "fal-ai/flux-1/dev/image-to-image": Price(per_megapixel=0.03),
    "fal-ai/flux-1/dev/redux": Price(per_megapixel=0.025),
    "fal-ai/flux-1/schnell": Price(per_megapixel=0.003),
    "fal-ai/flux-1/schnell/redux": Price(per_megapixel=0.025),
    "fal-ai/flux-lora": Price(per_megapixel=0.035),
    "fal-ai/flux-lora/image-to-image": Price(per_megapixel=0.035),
    "fal-ai/flux-kontext-lora": Price(per_megapixel=0.035),
    "fal-ai/flux-kontext/dev": Price(per_image=0.025),
    "fal-ai/flux/dev": Price(per_megapixel=0.025),
    "fal-ai/flux/dev/image-to-image": Price(per_megapixel=0.03),
    "fal-ai/flux/schnell": Price(per_megapixel=0.003),
    "fal-ai/flux-pro/kontext": Price(per_image=0.04),
    "fal-ai/flux-pro/kontext/multi": Price(per_image=0.04),
    "fal-ai/flux-pro/kontext/text-to-image": Price(per_image=0.04),
    "fal-ai/flux-pro/kontext/max*": Price(per_image=0.08),
    "fal-ai/ltx-video": Price(per_request=0.02),
    "openfal/utils/*": Price(),
}


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
    """Reserve, settle and report. Every method that moves money takes the caller's
    connection, so it commits or rolls back with the request change it belongs to."""

    def __init__(self, prices: PriceList) -> None:
        self.prices = prices

    async def admit(self, conn: AsyncConnection, key: ApiKey | None) -> None:
        """Refuse a submit over the key's requests-per-minute limit (runs after the
        insert, in its transaction, so the count includes this request)."""
        if key is None or key.rpm is None:
            return
        recent = await conn.execute(
            sa.select(sa.func.count()).where(requests.c.key_id == key.id, requests.c.created_at > time.time() - 60)
        )
        if int(recent.scalar() or 0) > key.rpm:
            raise RateLimited()

    async def reserve(self, conn: AsyncConnection, key: ApiKey | None, record: RequestRecord) -> int:
        amount = self.prices.estimate(record.endpoint_id, record.input)
        key_id = key.id if key else None
        if key_id is not None and amount:
            balance = api_keys.c.balance_micros
            result = await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, sa.or_(balance.is_(None), balance >= amount))
                .values(balance_micros=balance - amount)
            )
            if result.rowcount == 0:
                raise InsufficientCredit()
        await _entry(conn, record, "reserve", -amount)
        return amount

    async def settle(self, conn: AsyncConnection, record: RequestRecord, *, video_seconds: float = 0.0) -> None:
        """Release the reserve; charge what was delivered if the request succeeded."""
        reserved = record.reserved_micros or 0
        got = delivered(record.result_body, video_seconds) if record.error is None else Usage()
        charge = self.prices.charge(record.endpoint_id, got) if record.error is None else 0
        if record.key_id is not None:
            await _move(conn, record.key_id, reserved - charge)
        await _entry(conn, record, "release", reserved)
        await _entry(conn, record, "charge", -charge, got, outcome=record.error_type or "ok")


async def _move(conn: AsyncConnection, key_id: str, delta: int) -> None:
    """Add ``delta`` to a credit-limited key's balance (no-op for metered-only keys)."""
    await conn.execute(
        api_keys.update()
        .where(api_keys.c.id == key_id, api_keys.c.balance_micros.is_not(None))
        .values(balance_micros=api_keys.c.balance_micros + delta)
    )


async def _entry(conn: AsyncConnection, record: RequestRecord, kind: str, amount: int, got: Usage = Usage(), *, outcome: str | None = None) -> None:
    await conn.execute(
        ledger.insert().values(
            key_id=record.key_id,
            request_id=record.id,
            endpoint_id=record.endpoint_id,
            kind=kind,
            amount_micros=amount,
            images=got.images,
            megapixels=got.megapixels,
            video_seconds=got.video_seconds,
            outcome=outcome,
            created_at=time.time(),
        )
    )


#: kept here too: callers that price things also top keys up
credit = store_ledger.credit
