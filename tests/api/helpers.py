"""Random aggregate rows for the API tests, and an independent reading of the rows the API must
return.

The expected points are computed here from a plain SELECT of each table, with Decimal
arithmetic, sharing nothing with the API's code but the table names.
"""

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import uvicorn
from sqlalchemy import create_engine, text

from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY, Partial, Sketch
from tests.support import PG_ADMIN_URL, pg_available  # noqa: F401 - re-exported for the API tests

REDIS_TEST_URL = os.environ.get("METRICS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Saturday 2025-03-01: five days of hours cross a Sunday week boundary.
START = datetime(2025, 3, 1)
HOURS = 5 * 24
BILLERS = (11, 12)
LOOPBACK_CLIENT = ("127.0.0.1", 50000)

PORTAL_TOKEN = "portal-token-for-biller-11"
ADMIN_TOKEN = "admin-token-all-billers"
#: A second all-billers token: another caller with the same rights as ADMIN_TOKEN.
OPS_TOKEN = "ops-token-all-billers"


def covered(partial: Partial, hours: int, expected: int) -> Partial:
    partial.covered_hours, partial.expected_hours = hours, expected
    return partial


def random_partial(rng: np.random.Generator, request_count: int | None = None) -> Partial:
    """A Partial with consistent counts and arbitrary (but 2-decimal) figures, covering its
    hour."""
    n = int(rng.integers(0, 500)) if request_count is None else request_count
    failed = int(rng.integers(0, n + 1)) if n else 0
    timeouts = int(rng.integers(0, failed + 1)) if failed else 0
    valid = int(rng.integers(0, n + 1)) if n else 0
    total = Decimal(int(rng.integers(0, 10_000_000))) / 100 if valid else Decimal(0)
    pct = {
        p: (Decimal(int(rng.integers(0, 3_000_000))) / 100 if valid else None) for p in (50, 95, 99)
    }
    sketch = Sketch()
    if valid:
        sketch.add(int(rng.integers(100, 1000)), valid)
    return covered(Partial(n, failed, timeouts, valid, total, sketch, pct), 1, 1)


def fixed_partial(request_count: int, failed: int) -> Partial:
    return covered(
        Partial(request_count, failed, 0, 0, Decimal(0), Sketch(), {50: None, 95: None, 99: None}),
        1,
        1,
    )


def populate(url: str, seed: int = 3) -> WarehouseResource:
    """Hourly, daily and weekly rows of BILLERS from START, including zero-call windows and
    availability figures that round half away from zero (90.625 -> 90.63)."""
    rng = np.random.default_rng(seed)
    resource = WarehouseResource(url=url)
    resource.ensure_schema()
    hourly = {}
    for biller in BILLERS:
        for h in range(HOURS):
            hourly[(biller, START + timedelta(hours=h))] = random_partial(rng)
    hourly[(11, START + timedelta(hours=5))] = random_partial(rng, request_count=0)
    hourly[(11, START + timedelta(hours=6))] = fixed_partial(32, 3)  # 90.625 %
    hourly[(11, START + timedelta(hours=7))] = fixed_partial(32, 1)  # 96.875 %
    hourly[(11, START + timedelta(hours=8))] = fixed_partial(3, 1)  # 66.666.. %
    # An hour whose latest read failed (busy): its old figures stay, but it is not served.
    hourly[(12, START + timedelta(hours=9))] = covered(random_partial(rng), 0, 1)
    resource.write_partials(HOURLY, hourly)
    daily = {
        (b, START + timedelta(days=d)): covered(random_partial(rng), 24, 24)
        for b in BILLERS
        for d in range(5)
    }
    covered(daily[(11, START + timedelta(days=1))], 20, 24)  # a partial day
    resource.write_partials(DAILY, daily)
    weeks = (START - timedelta(days=6), START + timedelta(days=1))  # Sundays
    resource.write_partials(
        WEEKLY,
        {
            (b, w): covered(random_partial(rng), 168 - 4 * (w == weeks[1]), 168)
            for b in BILLERS
            for w in weeks
        },
    )
    return resource


# --- the independent expectation -----------------------------------------------------------------

VALUE_SQL = {
    1: ("DataPumpResponseTimeAggregation", '"AvgResponseTime"'),
    2: ("DataPumpErrorAggregation", '"ErrorRate"'),
    3: ("DataPumpTimeoutErrorAggregation", '"TimeoutRate"'),
    4: ("DataPumpResponseTimeAggregation", '"RequestCount"'),
    5: ("DataPumpResponseTimeAggregation", '"P50ResponseTime"'),
    6: ("DataPumpResponseTimeAggregation", '"P95ResponseTime"'),
    7: ("DataPumpResponseTimeAggregation", '"P99ResponseTime"'),
    8: ("DataPumpErrorAggregation", '"FailedRequests"'),
}


def _cents(value) -> Decimal | None:
    if value is None:
        return None
    d = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    return d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def expected_points(
    url: str, biller: int, metric: int, level: int, start: datetime, end: datetime
) -> list[dict]:
    """What /api/metrics must answer, read with plain SQL and Decimal maths."""
    table, column = VALUE_SQL[metric]
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f'SELECT "StartTime", "RequestCount", {column} AS v, "CoveredHours", '
                f'"ExpectedHours" FROM "{table}" '
                'WHERE "BillerId" = :b AND "TimeStampTypeId" = :l'
            ),
            {"b": biller, "l": level},
        ).all()
    engine.dispose()
    out = []
    for started, count, v, covered_hours, expected_hours in rows:
        started = datetime.fromisoformat(started) if isinstance(started, str) else started
        if not start <= started < end or covered_hours == 0:
            continue
        if metric == 4:
            value = int(v)
        elif metric == 8:
            value = (
                None
                if not count
                else _cents(Decimal(100 * (int(count) - int(v))) / Decimal(int(count)))
            )
        else:
            value = _cents(v)
        out.append(
            {
                "t": started.isoformat() + "Z",
                "value": value,
                "requestCount": int(count),
                "coveredHours": covered_hours,
                "expectedHours": expected_hours,
                "complete": covered_hours is not None and covered_hours == expected_hours,
            }
        )
    return sorted(out, key=lambda p: p["t"])


def decoded(response) -> dict:
    """A response body with numbers as Decimal, to compare with the expectation exactly."""
    return json.loads(response.text, parse_float=Decimal)


# --- warehouses ----------------------------------------------------------------------------------


@dataclass
class Warehouse:
    backend: str
    url: str
    resource: WarehouseResource


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """uvicorn serving an app in a background thread until stop()."""

    def __init__(self, app, port: int):
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def oversized_requests(url: str, size: int = 20 << 20) -> dict[str, tuple[int, str]]:
    """Send ``url`` a body of ``size`` bytes the ways clients do; each one's status and body
    (status 0 and the error when the connection broke before an answer was read).

    urllib says ``Connection: close`` (the server closes after answering, so an answer sent
    before the body was read is lost in a reset); httpx keeps the connection, once with a
    Content-Length and once chunked (no length); curl waits for ``100 Continue``."""
    import subprocess
    import tempfile
    import urllib.error
    import urllib.request

    import httpx

    body = b"x" * size
    answers: dict[str, tuple[int, str]] = {}
    try:
        request = urllib.request.Request(url, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=60) as r:
            answers["urllib"] = (r.status, r.read().decode())
    except urllib.error.HTTPError as exc:
        answers["urllib"] = (exc.code, exc.read().decode())
    except OSError as exc:
        answers["urllib"] = (0, repr(exc))

    def chunks():
        for i in range(0, size, 1 << 16):
            yield body[i : i + (1 << 16)]

    for name, content in (("httpx", body), ("httpx chunked", chunks())):
        try:
            r = httpx.post(url, content=content, timeout=60)
            answers[name] = (r.status_code, r.text)
        except httpx.HTTPError as exc:
            answers[name] = (0, repr(exc))
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        curl = subprocess.run(
            ["curl", "-sS", "-w", "\n%{http_code}", "--data-binary", f"@{f.name}", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    text, _, code = curl.stdout.rpartition("\n")
    answers["curl"] = (int(code) if code.isdigit() else 0, text or curl.stderr)
    return answers


def watched_page(browser, width: int, height: int):
    """A new browser page and the list its script errors and console errors are collected in."""
    problems: list[str] = []
    page = browser.new_page(viewport={"width": width, "height": height})
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return page, problems


@contextmanager
def browser_page(browser, app, path: str, viewport=(1280, 1000)):
    """``app`` served on a free loopback port and a Chromium page at ``path`` on it; yields the
    page and the list of its errors (uncaught exceptions and console errors)."""
    port = free_port()
    server = ThreadedServer(app, port)
    server.start()
    try:
        page, problems = watched_page(browser, *viewport)
        page.goto(f"http://127.0.0.1:{port}{path}")
        yield page, problems
    finally:
        server.stop()
