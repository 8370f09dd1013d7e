"""Times as the API reads and writes them: naive UTC inside, ISO 8601 outside."""

from datetime import UTC, datetime

from metrics_pipeline.api.errors import ApiError

#: The times the API accepts: SQL Server's DATETIME range (the warehouse's StartTime column there),
#: which also keeps every default range and offset conversion inside Python's datetime.
MIN_TIME = datetime(1753, 1, 1)
MAX_TIME = datetime(9999, 12, 31)


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


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)
