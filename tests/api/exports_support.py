"""Helpers of the export tests: an injectable clock, a full export loop, an independent reading
of a table's rows (plain SQL, sharing nothing with the export code but the table name)."""

import time
import uuid
from datetime import datetime

from sqlalchemy import create_engine, text

OBJECT = "DataPumpErrorAggregation"
WINDOW = {"fromDate": "2025-03-01", "toDate": "2025-03-10"}
EXPORT = f"/api/v2/exports/{OBJECT}"


class Clock:
    """Epoch seconds that move only when told."""

    def __init__(self, start: float = 1_764_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unique_prefix() -> str:
    return f"metrics-pipeline-test:{uuid.uuid4().hex[:10]}:"


def keys_of(rows: list[dict]) -> list[tuple]:
    return [(r["BillerId"], r["TimeStampTypeId"], r["StartTime"]) for r in rows]


def export_all(client, params: dict, headers=None, after_first=None) -> tuple[list[dict], str]:
    """Every row of an export, page by page; ``after_first()`` runs once after page 1."""
    response = client.get(EXPORT, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    rows, token = list(body["rows"]), body["continuationToken"]
    assert response.headers.get("continuation-token") == token
    if after_first is not None:
        after_first()
    while token:
        response = client.get(
            EXPORT, params={**params, "continuationToken": token}, headers=headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        rows.extend(body["rows"])
        token = body["continuationToken"]
    return rows, response.headers["export-task-id"]


def table_keys(url: str, table: str, start: datetime, end: datetime) -> list[tuple]:
    """(BillerId, TimeStampTypeId, StartTime ISO Z) of the rows in [start, end), by plain SQL."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(f'SELECT "BillerId", "TimeStampTypeId", "StartTime" FROM "{table}"')
        ).all()
    engine.dispose()
    out = []
    for biller, level, started in rows:
        started = datetime.fromisoformat(started) if isinstance(started, str) else started
        if start <= started < end:
            out.append((biller, level, started.isoformat() + "Z"))
    return sorted(out)


def wait_for(predicate, what: str, timeout_s: float = 30.0):
    """Poll ``predicate()`` until it returns a truthy value (background fetch-ahead)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
