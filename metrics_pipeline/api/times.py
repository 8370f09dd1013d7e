"""Times as the API reads and writes them: naive UTC inside, ISO 8601 outside."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from metrics_pipeline.api.errors import ApiError

#: The times the API accepts: SQL Server's DATETIME range (the warehouse's StartTime column there),
#: which also keeps every default range and offset conversion inside Python's datetime.
MIN_TIME = datetime(1753, 1, 1)
MAX_TIME = datetime(9999, 12, 31)


# The OpenAPI patterns of the API's times: exactly the ISO 8601 forms ``parse_time`` reads (a date,
# or a date and time with an optional offset), for years 1754-9998, real days only (29 February
# of leap years). 1753 and 9999 are accepted too, as far as [MIN_TIME, MAX_TIME] goes after the
# offset, which a pattern cannot say: the patterns leave those two years out.
_YEAR = r"(175[4-9]|17[6-9]\d|1[89]\d\d|[2-8]\d{3}|9[0-8]\d\d|99[0-8]\d|999[0-8])"
_MONTH_DAY = (
    r"((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)"
    r"|02-(0[1-9]|1\d|2[0-8]))"
)
_LEAP_YEAR = (
    r"(17(56|[68][048]|[79][26])|(1[89]|[2-9]\d)(0[48]|[2468][048]|[13579][26])"
    r"|([2468][048]|[3579][26])00)"
)
_DATE = rf"({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = r"[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?"
#: A date (``YYYY-MM-DD``).
DATE_PATTERN = rf"^{_DATE}$"
#: A date, or a date and time (``T`` or a space; seconds and fraction optional; ``Z``/``±hh:mm``).
TIME_PATTERN = rf"^{_DATE}({_TIME})?$"
#: What the descriptions of time parameters say about their range.
RANGE_NOTE = f"from {MIN_TIME.date()} to {MAX_TIME.date()} UTC after its offset"

#: The ``from`` and ``to`` query parameters of a range of time.
From = Annotated[
    str | None,
    Query(
        alias="from",
        max_length=64,
        description=f"Range start (inclusive), ISO 8601, UTC when no offset; {RANGE_NOTE}",
        json_schema_extra={"pattern": TIME_PATTERN},
    ),
]
To = Annotated[
    str | None,
    Query(
        max_length=64,
        description=f"Range end (exclusive), ISO 8601; {RANGE_NOTE}. Default: now",
        json_schema_extra={"pattern": TIME_PATTERN},
    ),
]


def utc_iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds") + "Z"


def parse_time(text: str, parameter: str) -> datetime:
    """An ISO 8601 date or time as naive UTC (one without an offset is taken as UTC), within
    [MIN_TIME, MAX_TIME]; else a 400 naming the parameter."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiError(
            400, f"{parameter}: not an ISO 8601 date or time: {text[:40]!r}", parameter
        ) from None
    try:
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        value = None
    return within_range(value, parameter, text.strip())


def within_range(value: datetime | None, parameter: str, text: str) -> datetime:
    """``value`` when it lies in [MIN_TIME, MAX_TIME]; else (or None) a 400 naming the parameter
    and quoting ``text``, what the client sent."""
    if value is None or not MIN_TIME <= value <= MAX_TIME:
        raise ApiError(
            400,
            f"{parameter}: {text[:40]!r} is out of range (from {MIN_TIME.date()} to "
            f"{MAX_TIME.date()}, UTC)",
            parameter,
        )
    return value


def earliest(end: datetime, span) -> datetime:
    """``end - span``, but not before MIN_TIME (a default range near the start of time)."""
    return end - span if end - MIN_TIME > span else MIN_TIME
