"""Pure rules of the family: what a valid data point is, and the exact hourly statistics.

No Dagster, no SQL, no I/O: the collector, the consumer, the SQL builders' tests and the
acceptance tests' independent computation all use these.
"""

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,100}")
APP_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,100}")
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
#: The largest magnitude of a value: an hour's sum (its average, the median of two values) of up
#: to 10^58 such values stays finite in a double. Beyond it, the collector refuses the value.
MAX_MAGNITUDE = 1e250
#: The stat types of the query routes, in the order the docs list them.
STAT_TYPES = ("average", "min", "max", "median", "count", "p95", "p99")
#: The percentiles kept per hour (nearest rank), by stat type.
PERCENTILES = {"p95": 95, "p99": 99}


class BadPoint(ValueError):
    """A request field is invalid; ``field`` names it (e.g. ``metrics.cpu`` or ``[3].time``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Item:
    """One validated measurement message: an app's values of some keys at one time."""

    id: str
    app: str
    time: datetime  # naive UTC
    metrics: dict[str, float]


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time as naive UTC (no offset means UTC); ValueError when it is not one."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def finite_number(value: object) -> float | None:
    """The value as float when it is a JSON number (not a bool, not a string) of magnitude at most
    MAX_MAGNITUDE (so not NaN or infinite), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any double
        return None
    return number if abs(number) <= MAX_MAGNITUDE else None


def validate_item(
    raw: object,
    where: str,
    now: datetime,
    max_past: timedelta,
    max_future: timedelta,
    default_app: str | None = None,
    metrics_field: str = "metrics",
) -> Item:
    """The Item of one ``{"app", "time", "id", "metrics"}`` object, or BadPoint naming the field.

    A missing ``time`` is ``now``; a missing ``id`` gets a random one (a client that retries
    must send its own ``id`` for the retry to be stored once)."""
    prefix = f"{where}." if where else ""
    if not isinstance(raw, Mapping):
        raise BadPoint(where or "body", "expected a JSON object")
    app = raw.get("app", default_app)
    if not isinstance(app, str) or not APP_PATTERN.fullmatch(app):
        raise BadPoint(f"{prefix}app", "must match [A-Za-z0-9_.-]{1,100}")
    metrics = raw.get("metrics")
    field = f"{prefix}{metrics_field}"
    if not isinstance(metrics, Mapping) or not metrics:
        raise BadPoint(field, "expected a non-empty JSON object of key -> number")
    values: dict[str, float] = {}
    for key, value in metrics.items():
        if not KEY_PATTERN.fullmatch(key):
            raise BadPoint(field, f"key {key[:40]!r} must match [A-Za-z0-9_.-]{{1,100}}")
        number = finite_number(value)
        if number is None:
            raise BadPoint(
                f"{field}.{key}",
                f"not a number from -{MAX_MAGNITUDE:g} to {MAX_MAGNITUDE:g}: {str(value)[:40]!r}",
            )
        values[key] = number
    time = now
    if raw.get("time") is not None:
        text = raw["time"]
        try:
            time = parse_utc(text) if isinstance(text, str) else None
        except ValueError:
            time = None
        if time is None:
            raise BadPoint(f"{prefix}time", f"not an ISO 8601 time: {str(text)[:40]!r}")
        if time < now - max_past or time > now + max_future:
            raise BadPoint(f"{prefix}time", f"{time.isoformat()}Z is too far from now")
    ident = raw.get("id")
    if ident is None:
        ident = uuid.uuid4().hex
    elif not isinstance(ident, str) or not ID_PATTERN.fullmatch(ident):
        raise BadPoint(f"{prefix}id", "must match [A-Za-z0-9_.:-]{1,100}")
    return Item(id=ident, app=app, time=time, metrics=values)


def message_id(item: Item) -> str:
    """The row's MessageId: the client's id scoped to its app (two apps may reuse an id)."""
    return f"{item.app}/{item.id}"


def median(values: Iterable[float]) -> float | None:
    """Exact median: the middle value, or the mean of the two middle values for an even count."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def nearest_rank(ordered: list[float], percent: int) -> float | None:
    """The ``percent``-th percentile of sorted values by nearest rank: the value of the
    smallest rank r (1-based) with 100 r >= percent n."""
    n = len(ordered)
    return ordered[max(1, -(-percent * n // 100)) - 1] if n else None


@dataclass(frozen=True)
class HourStats:
    """The statistics of one key for one hour (a ``CollectedMetricHourly`` or
    ``CollectedMetricAppHourly`` row); p95 and p99 are None in rows written before they were."""

    count: int
    average: float | None
    minimum: float | None
    maximum: float | None
    median: float | None
    p95: float | None = None
    p99: float | None = None

    def stat(self, name: str) -> float | int | None:
        """The value the query routes answer for ``name`` (one of STAT_TYPES)."""
        return {
            "average": self.average,
            "min": self.minimum,
            "max": self.maximum,
            "median": self.median,
            "count": self.count,
            "p95": self.p95,
            "p99": self.p99,
        }[name]


EMPTY = HourStats(0, None, None, None, None)


def hour_stats(values: Iterable[float]) -> HourStats:
    """The exact statistics of an hour's values (what the SQL must reproduce)."""
    ordered = sorted(values)
    if not ordered:
        return EMPTY
    return HourStats(
        len(ordered),
        math.fsum(ordered) / len(ordered),
        ordered[0],
        ordered[-1],
        median(ordered),
        *(nearest_rank(ordered, p) for p in PERCENTILES.values()),
    )


def hour_start(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)
