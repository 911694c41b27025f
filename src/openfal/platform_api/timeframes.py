"""Time ranges and buckets as fal's Platform API takes them: ``start``/``end`` (ISO 8601
dates or times; default the last 24 hours), a ``timeframe`` (minute, hour, day, week,
month; chosen from the range's length when absent) and a ``timezone`` whose local
midnights (and DST changes) the day, week and month buckets follow."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openfal.errors import InputInvalid

TIMEFRAMES = ("minute", "hour", "day", "week", "month")
#: the most buckets one answer may hold (a year of hours is 8,760: ask for days)
MAX_BUCKETS = 1000
DEFAULT_SPAN = 86400.0


@dataclass(frozen=True, slots=True)
class Buckets:
    """Bucket edges in unix seconds: bucket i is ``[edges[i], edges[i+1])``; the range
    asked for is ``[edges[0], edges[-1])``."""

    edges: tuple[float, ...]
    timeframe: str
    zone: ZoneInfo

    @property
    def start(self) -> float:
        return self.edges[0]

    @property
    def end(self) -> float:
        return self.edges[-1]

    def label(self, index: int) -> str:
        """Bucket ``index``'s start as fal labels buckets: ISO 8601 in the timezone."""
        return datetime.fromtimestamp(self.edges[index], self.zone).isoformat()


def parse_time(value: str | None, field: str, zone: ZoneInfo) -> float | None:
    """An ISO 8601 date or datetime (``2025-01-01``, ``2025-01-01T10:00:00Z``); a value
    without an offset is in ``zone``."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputInvalid([{"loc": ["query", field], "msg": "Expected an ISO 8601 date or time (2025-01-01T00:00:00Z)", "type": "datetime_parsing"}]) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.timestamp()


def parse_zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InputInvalid([{"loc": ["query", "timezone"], "msg": f"Unknown timezone {name!r} (an IANA name: Europe/Paris)", "type": "value_error"}]) from None


def auto_timeframe(span: float) -> str:
    """fal's automatic granularity: minutes up to 2 hours, hours up to 2 days, days up
    to 90 days, weeks up to a year, months beyond."""
    if span <= 2 * 3600:
        return "minute"
    if span <= 2 * 86400:
        return "hour"
    if span <= 90 * 86400:
        return "day"
    if span <= 366 * 86400:
        return "week"
    return "month"


def _floor(moment: datetime, timeframe: str) -> datetime:
    if timeframe == "minute":
        return moment.replace(second=0, microsecond=0)
    if timeframe == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if timeframe == "day":
        return day
    if timeframe == "week":  # weeks start on Monday (ISO)
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next(moment: datetime, timeframe: str) -> datetime:
    """The next local boundary (wall-clock arithmetic, so a DST day is 23 or 25 hours)."""
    if timeframe in ("minute", "hour"):  # elapsed time: no hour is skipped or doubled
        step = timedelta(minutes=1) if timeframe == "minute" else timedelta(hours=1)
        return (moment.astimezone(UTC) + step).astimezone(moment.tzinfo)
    if timeframe == "day":
        return _local(moment + timedelta(days=1))
    if timeframe == "week":
        return _local(moment + timedelta(days=7))
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return _local(moment.replace(year=year, month=month))


def _local(moment: datetime) -> datetime:
    """Re-read a wall-clock time in its zone (the offset may have changed)."""
    return moment.replace(tzinfo=None).replace(tzinfo=moment.tzinfo)


def buckets(
    start: str | None, end: str | None, *, timeframe: str | None = None, timezone: str | None = None, now: float | None = None
) -> Buckets:
    """The buckets covering ``[start, end)``: the first starts at the timeframe boundary
    at or before ``start`` in the timezone (so it is a whole bucket), the last ends at
    ``end``."""
    zone = parse_zone(timezone)
    now = time.time() if now is None else now
    until = parse_time(end, "end", zone) or now
    since = parse_time(start, "start", zone)
    since = until - DEFAULT_SPAN if since is None else since
    if until <= since:
        raise InputInvalid([{"loc": ["query", "end"], "msg": "end must be after start", "type": "value_error"}])
    if timeframe is not None and timeframe not in TIMEFRAMES:
        raise InputInvalid([{"loc": ["query", "timeframe"], "msg": f"One of {', '.join(TIMEFRAMES)}", "type": "enum"}])
    chosen = timeframe or auto_timeframe(until - since)
    moment = _floor(datetime.fromtimestamp(since, zone), chosen)
    edges = [moment.astimezone(UTC).timestamp()]
    while edges[-1] < until:
        if len(edges) > MAX_BUCKETS:
            msg = f"More than {MAX_BUCKETS} {chosen} buckets: ask for a larger timeframe or a shorter range"
            raise InputInvalid([{"loc": ["query", "timeframe"], "msg": msg, "type": "value_error"}])
        moment = _next(moment, chosen)
        edges.append(moment.astimezone(UTC).timestamp())
    edges[-1] = until
    return Buckets(tuple(edges), chosen, zone)
