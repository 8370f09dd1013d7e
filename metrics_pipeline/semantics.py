"""The business rules of the metrics, as pure functions (no Dagster, no SQL).

Everything here is the *definition* the SQL builders in :mod:`metrics_pipeline.sql` implement in
the database; the unit tests check both against each other on the same rows.
"""

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

# --- Reference data (the seed's lookup tables) -------------------------------------------------


@dataclass(frozen=True)
class TimeStampType:
    id: int
    name: str
    hierarchy_level: int


@dataclass(frozen=True)
class MetricType:
    id: int
    name: str
    unit: str
    description: str


METRIC_TYPES = (
    MetricType(1, "AvgResponseTime", "ms", "Time taken to respond"),
    MetricType(2, "AvgErrorRate", "Percentage", "Percentage of failed requests"),
    MetricType(3, "AvgTimeOutErrorRate", "Percentage", "Timeout errors"),
    MetricType(4, "Throughput", "Requests", "Requests per period"),
    MetricType(5, "P50ResponseTime", "ms", "Median response time"),
    MetricType(6, "P95ResponseTime", "ms", "95th percentile response time"),
    MetricType(7, "P99ResponseTime", "ms", "99th percentile response time"),
    MetricType(8, "Availability", "Percentage", "Percentage of requests that did not fail"),
)

PERCENTILES = (50, 95, 99)

# --- Classification rules ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """What counts as a timeout and as a failure. Every field can be changed in configuration."""

    timeout_status_codes: tuple[int, ...] = (408, 504)
    timeout_words: tuple[str, ...] = ("timeout",)
    timeout_threshold_ms: float = 30000.0
    success_min: int = 200
    success_max: int = 399


DEFAULT_RULES = Rules()


def trim_status(status: str | None) -> str | None:
    """StatusCode with surrounding spaces removed (what T-SQL LTRIM/RTRIM do)."""
    return None if status is None else status.strip(" ")


def status_as_int(status: str | None) -> int | None:
    """The status as an integer when it is one or more ASCII digits after trimming, else None."""
    s = trim_status(status)
    if not s or not all("0" <= ch <= "9" for ch in s):
        return None
    return int(s)


#: A number stored as text: an unsigned decimal with spaces around (sql.dialect.as_number).
_TEXT_NUMBER = re.compile(r" *([0-9]+\.?[0-9]*|\.[0-9]+) *")


def number_from_text(value: str | float | int | Decimal | None) -> Decimal | None:
    """A ResponseTime as the shard statement reads it: a number as it is; text by the one rule
    (``'123.45'``, ``' 5 '``, ``'7.'`` are numbers; ``'abc'``, ``''``, ``'1e3'``, ``'-5'`` not)."""
    if value is None:
        return None
    if not isinstance(value, str):
        return to_decimal(value)
    return Decimal(value.strip(" ")) if _TEXT_NUMBER.fullmatch(value) else None


def has_valid_response_time(response_time: float | Decimal | None) -> bool:
    """Rows with a NULL or negative ResponseTime count only in RequestCount."""
    return response_time is not None and response_time >= 0


def is_timeout(
    status: str | None, response_time: float | Decimal | None, rules: Rules = DEFAULT_RULES
) -> bool:
    code = status_as_int(status)
    if code is not None and code in rules.timeout_status_codes:
        return True
    s = trim_status(status)
    if s is not None and s.lower() in {w.lower() for w in rules.timeout_words}:
        return True
    return response_time is not None and response_time >= rules.timeout_threshold_ms


def is_failed(
    status: str | None, response_time: float | Decimal | None, rules: Rules = DEFAULT_RULES
) -> bool:
    if is_timeout(status, response_time, rules):
        return True
    code = status_as_int(status)
    return code is None or not (rules.success_min <= code <= rules.success_max)


# --- Rounding ----------------------------------------------------------------------------------

CENT = Decimal("0.01")


def to_decimal(value: float | int | Decimal | str) -> Decimal:
    """A Decimal from a database number without binary noise (floats go through repr)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def round2(value: float | int | Decimal | None) -> Decimal | None:
    """Two decimals, rounded half away from zero (Decimal's ROUND_HALF_UP)."""
    if value is None:
        return None
    return to_decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def percentage(numerator: int, denominator: int) -> Decimal | None:
    """100 * numerator / denominator with 2 decimals; NULL when the denominator is zero."""
    if not denominator:
        return None
    return round2(Decimal(100 * numerator) / Decimal(denominator))


def average(total: Decimal | float | int | None, count: int) -> Decimal | None:
    if not count or total is None:
        return None
    return round2(to_decimal(total) / Decimal(count))


def nearest_rank(n: int, p: int) -> int:
    """1-based rank of the p-th percentile (nearest-rank method): ceil(p * n / 100)."""
    return (p * n + 99) // 100


# --- Mergeable response-time sketch ------------------------------------------------------------

#: Relative accuracy of the sketch: each value is represented within this fraction.
SKETCH_ALPHA = 0.005
SKETCH_GAMMA = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA)
SKETCH_LOG_GAMMA = math.log(SKETCH_GAMMA)
#: Bucket index used for a response time of exactly zero (log is undefined there).
ZERO_BUCKET = -(10**6)


def sketch_bucket(value: float | Decimal) -> int:
    """Log-bucket of a non-negative value: bucket i holds (gamma^(i-1), gamma^i]."""
    v = float(value)
    if v <= 0:
        return ZERO_BUCKET
    return math.ceil(math.log(v) / SKETCH_LOG_GAMMA)


def sketch_bucket_value(index: int) -> float:
    """The value that represents bucket ``index`` within SKETCH_ALPHA relative error."""
    if index == ZERO_BUCKET:
        return 0.0
    return 2 * SKETCH_GAMMA**index / (SKETCH_GAMMA + 1)


def _numbers(text: str, dtype="int64"):
    """The numbers of a comma-separated text as a NumPy array (parsed in C), or None if it is
    anything else."""
    import numpy as np

    try:
        numbers = np.fromstring(text, dtype=dtype, sep=",")
    except ValueError:
        return None
    return numbers if len(numbers) == text.count(",") + 1 else None


def _tally(indexes, weights=None):
    """(distinct indexes, their nonzero counts) of a NumPy array of bucket indexes (each one
    call, or ``weights`` calls), in index order: a count per index of the span they cover (a
    few thousand at most, the zero bucket apart) rather than a sort."""
    import numpy as np

    zero = indexes == ZERO_BUCKET
    found, counts = [], []
    if zero.any():
        found.append(np.array([ZERO_BUCKET], dtype=np.int64))
        counts.append(np.array([zero.sum() if weights is None else weights[zero].sum()]))
        indexes = indexes[~zero]
        weights = None if weights is None else weights[~zero]
    if len(indexes):
        low = int(indexes.min())
        if int(indexes.max()) - low > 1_000_000:  # not a response time's span: sort instead
            distinct, inverse = np.unique(indexes, return_inverse=True)
            tally = np.bincount(inverse, weights=weights, minlength=len(distinct))
        else:
            tally = np.bincount(indexes - low, weights=weights)
            distinct = np.arange(low, low + len(tally), dtype=np.int64)
        found.append(distinct)
        counts.append(tally)
    if not found:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    distinct, tally = np.concatenate(found), np.concatenate(counts).astype(np.int64)
    return distinct[tally != 0], tally[tally != 0]


class Sketch:
    """Counts of valid response times per log bucket; merging is adding counts (exact).

    A sketch read from its text (``decode``) stays text until its counts are needed: merging
    such sketches (a day from its hours) joins their texts, and the counts are added up once,
    for the merged sketch, when it is encoded or asked for a quantile."""

    __slots__ = ("_counts", "_texts")

    def __init__(self, counts: Mapping[int, int] | None = None):
        self._counts: dict[int, int] = {i: c for i, c in (counts or {}).items() if c}
        #: Encoded sketches merged in but not yet added to ``_counts``.
        self._texts: list[str] = []

    @classmethod
    def of_sorted(cls, indexes: list[int], counts: list[int]) -> "Sketch":
        """The sketch of distinct ``indexes`` and their nonzero ``counts``."""
        sketch = cls()
        sketch._counts = dict(zip(indexes, counts, strict=True))
        return sketch

    @property
    def counts(self) -> dict[int, int]:
        if self._texts:
            self._add_texts()
        return self._counts

    def _add_texts(self) -> None:
        """The merged texts' counts added up per index (in NumPy: a day's 24 hours repeat most
        of their indexes, so only the distinct ones reach the dict)."""
        text = ",".join(self._texts)
        self._texts = []
        numbers = _numbers(text.replace(":", ","))
        if numbers is None or len(numbers) != 2 * text.count(":"):
            raise ValueError(f"a sketch text is not index:count pairs: {text[:80]!r}")
        indexes, sums = _tally(numbers[0::2], numbers[1::2])
        counts = self._counts
        if not counts:
            counts.update(zip(indexes.tolist(), sums.tolist(), strict=True))
            return
        for index, count in zip(indexes.tolist(), sums.tolist(), strict=True):
            counts[index] = counts.get(index, 0) + count

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sketch) and self.counts == other.counts

    def __repr__(self) -> str:
        return f"Sketch({self.counts!r})"

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, index: int, count: int = 1) -> None:
        if count:
            counts = self.counts
            counts[index] = counts.get(index, 0) + count

    def merge(self, other: "Sketch") -> None:
        if other._texts:
            self._texts.extend(other._texts)
        for index, count in other._counts.items():
            self.add(index, count)

    def quantile(self, p: int) -> Decimal | None:
        """Nearest-rank p-th percentile, within SKETCH_ALPHA of the exact value."""
        n = self.total
        if n == 0:
            return None
        rank = nearest_rank(n, p)
        seen = 0
        counts = self.counts
        for index in sorted(counts):
            seen += counts[index]
            if seen >= rank:
                return round2(sketch_bucket_value(index))
        raise AssertionError("rank beyond sketch total")  # pragma: no cover

    def encode(self) -> str:
        """Compact text form kept in the warehouse: 'index:count' pairs, sorted, comma separated."""
        return ",".join([f"{i}:{c}" for i, c in sorted(self.counts.items())])

    @classmethod
    def decode(cls, text: str | None) -> "Sketch":
        """The sketch of a text of 'index:count' pairs, in any order, an index possibly more than
        once (its counts add up): ``encode``'s form, or a shard's ``bucket_counts``."""
        sketch = cls()
        if text:
            sketch._texts.append(text)
        return sketch


def _buckets(values):
    """``sketch_bucket`` of every value of a NumPy array of non-negative response times."""
    import numpy as np

    with np.errstate(divide="ignore"):
        logs = np.ceil(np.log(values) / SKETCH_LOG_GAMMA)
    # An infinite response time: the highest bucket there is (a database's cast of it).
    logs = np.minimum(logs, float(2**62))
    return np.where(values > 0, logs, ZERO_BUCKET).astype(np.int64)


def calls_summary(
    texts: Sequence[str | None], sizes: Sequence[int]
) -> list[tuple[Sketch, dict[int, Decimal | None]]]:
    """The sketch and the exact nearest-rank percentiles of each group of calls whose valid
    response times are listed as text (``texts[i]``: ``sizes[i]`` numbers, comma separated,
    None when there are none; a shard's ``call_values``), computed in NumPy: the groups' values
    parsed at once, each group sorted, its percentiles read at their ranks and its sketch
    counted from the sorted values (a bucket's calls are next to each other)."""
    import numpy as np

    counts = np.asarray(sizes, dtype=np.int64)
    listed = [t for t in texts if t]
    values = _numbers(",".join(listed), "float64") if listed else np.array([], dtype=np.float64)
    if values is None or len(values) != int(counts.sum()):
        shown = listed[0][:80] if listed else ""
        raise ValueError(f"listed response times are not {int(counts.sum())} numbers: {shown!r}")
    ends = np.cumsum(counts)
    starts = ends - counts
    bounds = list(zip(starts.tolist(), ends.tolist(), strict=True))
    for lo, hi in bounds:
        values[lo:hi].sort()
    buckets = _buckets(values)
    # Runs of one bucket within one group: where the bucket changes or a group starts.
    first = np.zeros(len(values), dtype=bool)
    if len(values):
        first[1:] = buckets[1:] != buckets[:-1]
        first[starts[counts > 0]] = True
    runs = np.flatnonzero(first)
    run_buckets = buckets[runs].tolist()
    run_calls = np.diff(np.append(runs, len(values))).tolist()
    run_bounds = zip(
        np.searchsorted(runs, starts).tolist(), np.searchsorted(runs, ends).tolist(), strict=True
    )
    # Each percentile's call, at its nearest rank in its sorted group (groups without calls
    # read any value and get None).
    at = {
        q: values[np.maximum(starts + nearest_rank(counts, q) - 1, 0)].tolist()
        if len(values)
        else [None] * len(counts)
        for q in PERCENTILES
    }
    out = []
    for g, ((lo, hi), (a, b)) in enumerate(zip(bounds, run_bounds, strict=True)):
        exact = {q: round2(at[q][g]) if hi > lo else None for q in PERCENTILES}
        out.append((Sketch.of_sorted(run_buckets[a:b], run_calls[a:b]), exact))
    return out


# --- Partials and rollups ----------------------------------------------------------------------


@dataclass
class Partial:
    """Additive facts of one biller and window; every published figure derives from these."""

    request_count: int = 0
    failed_count: int = 0
    timeout_count: int = 0
    response_time_count: int = 0
    total_response_time: Decimal = Decimal(0)
    sketch: Sketch = field(default_factory=Sketch)
    #: Exact percentiles when the partial was read from raw rows; None on rollups.
    exact_percentiles: Mapping[int, Decimal | None] | None = None
    #: Written hours summed into the figures (1 for an hour read from its shard), and the hours
    #: the window should have by now (:meth:`Level.expected_hours`): how much the figures know.
    covered_hours: int = 0
    expected_hours: int = 0

    def add(self, other: "Partial") -> None:
        self.request_count += other.request_count
        self.failed_count += other.failed_count
        self.timeout_count += other.timeout_count
        self.response_time_count += other.response_time_count
        self.total_response_time += to_decimal(other.total_response_time)
        self.sketch.merge(other.sketch)
        self.exact_percentiles = None
        self.covered_hours += other.covered_hours

    @property
    def avg_response_time(self) -> Decimal | None:
        return average(self.total_response_time, self.response_time_count)

    @property
    def error_rate(self) -> Decimal | None:
        return percentage(self.failed_count, self.request_count)

    @property
    def timeout_rate(self) -> Decimal | None:
        return percentage(self.timeout_count, self.request_count)

    def percentile(self, p: int) -> Decimal | None:
        if self.exact_percentiles is not None:
            return self.exact_percentiles.get(p)
        return self.sketch.quantile(p)


def rollup(partials: Iterable[Partial]) -> Partial:
    """Exact sum of partials (daily from hourly, weekly from daily), not an average of averages."""
    out = Partial()
    for partial in partials:
        out.add(partial)
    return out


def partial_from_rows(
    rows: Iterable[tuple[str | None, float | Decimal | None]], rules: Rules = DEFAULT_RULES
) -> Partial:
    """The reference computation over raw (StatusCode, ResponseTime) rows (tests, demos)."""
    out = Partial()
    valid: list[Decimal] = []
    for status, rt in rows:
        out.request_count += 1
        out.failed_count += is_failed(status, rt, rules)
        out.timeout_count += is_timeout(status, rt, rules)
        if has_valid_response_time(rt):
            value = round2(rt)
            valid.append(value)
            out.total_response_time += value
            out.sketch.add(sketch_bucket(value))
    out.response_time_count = len(valid)
    valid.sort()
    out.exact_percentiles = {
        p: (valid[nearest_rank(len(valid), p) - 1] if valid else None) for p in PERCENTILES
    }
    return out


# --- Time levels (UTC, start inclusive, end exclusive) -----------------------------------------


def hour_start(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


#: The ISO text forms a SQLite shard may store a CreatedDate in (sql.dialect, "timestamps").
_CREATED_TEXT = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2})(?::(\d{2})(?:\.(\d*))?)?)?"
    r"(Z|[+-]\d{2}:\d{2})? *"
)


def created_from_text(text: str) -> datetime | None:
    """The UTC instant of a text CreatedDate, to the whole second (its fraction dropped, never
    rounded into the next second, so the row stays in the hour it was written in); None for text
    that is no timestamp (NULL, ``''``, lower-case ``t``, a leading space, ``+0000``)."""
    m = _CREATED_TEXT.fullmatch(text)
    if m is None:
        return None
    day, hm, sec, _, zone = m.groups()
    try:
        ts = datetime.fromisoformat(f"{day} {hm or '00:00'}:{sec or '00'}")
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        ts -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return ts


def day_start(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def week_start(ts: datetime) -> datetime:
    """Sunday 00:00 on or before ``ts`` (weeks run Sunday to Sunday)."""
    day = day_start(ts)
    return day - timedelta(days=(day.weekday() + 1) % 7)


@dataclass(frozen=True)
class Level:
    """One time level of the aggregates: the seed's TimeStampTypeId, its name, its window length
    and floor, and the level it rolls up into. Everything that needs a level asks this object;
    :mod:`metrics_pipeline.partitions` gives its Dagster partitions."""

    id: int
    name: str
    title: str
    unit: str
    length: timedelta
    floor: Callable[[datetime], datetime]
    next_name: str | None = None

    @property
    def next(self) -> "Level | None":
        return LEVELS_BY_NAME.get(self.next_name) if self.next_name else None

    @property
    def previous(self) -> "Level | None":
        return next((lv for lv in LEVELS if lv.next_name == self.name), None)

    @property
    def job_name(self) -> str:
        return f"{self.name}_job"

    @property
    def group_name(self) -> str:
        return f"metrics_{self.name}"

    def expected_hours(self, start: datetime, now: datetime, first: datetime) -> int:
        """Hours the window starting at ``start`` should hold by ``now``: those up to and
        including the running hour, from the first partition hour ``first`` on (24 for a closed
        day, 168 for a closed week; an hour before the partitions begin is never expected)."""
        lo = max(start, first)
        hi = min(start + self.length, hour_start(now) + timedelta(hours=1))
        return max(0, int((hi - lo) / timedelta(hours=1)))

    def window(self, ts: datetime) -> tuple[datetime, datetime]:
        """The [start, end) window of this level that contains ``ts``."""
        start = self.floor(ts)
        return start, start + self.length

    def starts(self, start: datetime, end: datetime) -> list[datetime]:
        """Starts of the windows of this level that overlap [start, end)."""
        out, current = [], self.floor(start)
        while current < end:
            out.append(current)
            current += self.length
        return out

    def __str__(self) -> str:
        return self.name


HOURLY = Level(1, "hourly", "Hourly", "hour", timedelta(hours=1), hour_start, "daily")
DAILY = Level(2, "daily", "Daily", "day", timedelta(days=1), day_start, "weekly")
WEEKLY = Level(3, "weekly", "Weekly", "week", timedelta(days=7), week_start)
LEVELS = (HOURLY, DAILY, WEEKLY)
LEVELS_BY_NAME = {lv.name: lv for lv in LEVELS}
LEVELS_BY_ID = {lv.id: lv for lv in LEVELS}

TIMESTAMP_TYPES = tuple(TimeStampType(lv.id, lv.title, lv.id) for lv in LEVELS)
