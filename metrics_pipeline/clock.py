""" "Now", once: naive UTC, the form the warehouse, the ledger and the partitions hold."""

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now in UTC, naive, to the microsecond."""
    return datetime.now(UTC).replace(tzinfo=None)


def utc_second() -> datetime:
    """Now in UTC, naive, to the whole second: the warehouse's stamps and the API's default
    ends (one second of requests share an answer and its cache entry)."""
    return utc_now().replace(microsecond=0)


def as_naive_utc(value) -> datetime:
    """A database timestamp (datetime, or SQLite's text) as a naive UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value
