"""Times as the API reads and writes them: naive UTC inside, ISO 8601 outside."""

from datetime import UTC, datetime

from metrics_pipeline.api.errors import ApiError


def utc_iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds") + "Z"


def parse_time(text: str, parameter: str) -> datetime:
    """An ISO 8601 date or time as naive UTC; one without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiError(
            400, f"{parameter}: not an ISO 8601 date or time: {text[:40]!r}", parameter
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)
