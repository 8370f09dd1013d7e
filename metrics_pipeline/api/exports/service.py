"""Export tasks: the first call, the pages, fetch-ahead, cancelling and the status views.

The service is synchronous (the router runs it in a thread); the clock is injected, so every
lifecycle transition is testable without waiting. Pages come from a snapshot taken at the first
call: rows are paged by the object's unique key (never by offset), and rows whose snapshot id is
above the maximum seen at the first call are left out. A row updated in place keeps its key and
its id, so it is served exactly once; a row written after the first call is never served.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from metrics_pipeline.api.errors import ApiError
from metrics_pipeline.api.exports.lifecycle import (
    DRAINING,
    GONE,
    QUEUES,
    TaskTimes,
    Timings,
    gone_at,
    queue_of,
)
from metrics_pipeline.api.exports.objects import PublishedObject, published
from metrics_pipeline.api.exports.queries import page_query, snapshot_query
from metrics_pipeline.api.exports.render import CSV, render_csv, render_json
from metrics_pipeline.api.exports.store import TaskStore
from metrics_pipeline.api.exports.tokens import BadToken, PageToken, digest
from metrics_pipeline.sql.warehouse import Warehouse
from metrics_pipeline.web.auth import Principal

log = logging.getLogger(__name__)

# The seed's events, in the order a task emits them.
ADDED = "ADDED-TO-QUEUE"
METADATA = "META-DATA-SCANNED"
MAX_REACHED = "MAX-REQUESTED-PAGE-REACHED"
NO_RECORD = "NO-RECORD-FOUND"
END_OF_QUERY = "END-OF-QUERY_REACHED"
COMPLETED_EVENT = "COMPLETED"
CANCELED = "CANCELED"


def scanning(page: int) -> str:
    return f"SCANNING-PAGE-({page})"


def committing(page: int) -> str:
    return f"COMMITING-PAGE-({page})"


TOKEN = "continuationToken"


@dataclass(frozen=True)
class ExportSettings:
    """Limits and timings of exports (defaults: the seed's timings)."""

    max_page_size: int = 10_000
    default_page_size: int = 1_000
    #: Pages fetched ahead of the last page served.
    pages_ahead: int = 4
    #: Cached bytes one task may hold; fetch-ahead pauses above it.
    bytes_per_task: int = 32 * 2**20
    #: Live tasks at once (all callers); a new export beyond it is 429 EXPORT_TASKS_LIMIT.
    max_tasks: int = 200
    #: Cached bytes of all tasks; a new export beyond it is 429 EXPORT_CACHE_FULL.
    max_cache_bytes: int = 1024 * 2**20
    #: Threads fetching ahead (per API process).
    workers: int = 4
    timings: Timings = field(default_factory=Timings)
    #: How long a request waits for another fetcher of the same page.
    lock_wait_s: float = 30.0


@dataclass(frozen=True)
class ExportQuery:
    """What one export reads; the same on every page (a token is bound to it)."""

    object_name: str
    start: datetime
    end: datetime
    entities: tuple[int, ...] | None
    page_size: int
    format: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "objectName": self.object_name,
            "fromDate": self.start.isoformat() + "Z",
            "toDate": self.end.isoformat() + "Z",
            "billers": None if self.entities is None else list(self.entities),
            "pageSize": self.page_size,
            "format": self.format,
        }

    @property
    def digest(self) -> str:
        return digest(repr(sorted(self.as_dict().items())))


@dataclass(frozen=True)
class Page:
    """One page as sent: the body, the task and the next page's token (None on the last)."""

    task_id: str
    number: int
    body: bytes
    next_token: str | None
    rows: int


def caller_id(who: Principal) -> str:
    billers = "*" if who.billers is None else ",".join(map(str, sorted(who.billers)))
    return digest(f"{who.name}|{billers}")


def _encode_key(values) -> list:
    out = []
    for v in values:
        if isinstance(v, datetime):
            out.append({"dt": v.isoformat()})
        elif isinstance(v, Decimal):
            out.append({"dec": str(v)})
        else:
            out.append(v)
    return out


def _decode_key(values: list) -> list:
    out = []
    for v in values:
        if isinstance(v, dict) and "dt" in v:
            out.append(datetime.fromisoformat(v["dt"]))
        elif isinstance(v, dict) and "dec" in v:
            out.append(Decimal(v["dec"]))
        else:
            out.append(v)
    return out


def stamp(at: float) -> str:
    """Epoch seconds in the seed's time format, UTC: ``2019-05-02 10:39:36.560855``."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def times_of(record: dict[str, Any]) -> TaskTimes:
    return TaskTimes(record["last_activity"], record.get("completed_at"), record.get("canceled_at"))


#: How a status answer shows one task: (service, task_id, record, events=...) -> dict.
View = Callable[..., dict]


class ExportService:
    """Export tasks over one warehouse and one task store."""

    def __init__(
        self,
        engine: Engine,
        tables: Warehouse,
        store: TaskStore,
        settings: ExportSettings | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.engine = engine
        self.tables = tables
        self.store = store
        self.settings = settings or ExportSettings()
        self.clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._again: set[str] = set()

    # --- time and records ------------------------------------------------------------------

    def _ttl(self, record: dict[str, Any]) -> float:
        """Seconds the store keeps the task: until it is gone, with a margin."""
        return max(60.0, gone_at(times_of(record), self.settings.timings) - self.clock() + 60)

    def _queue(self, record: dict[str, Any]) -> str:
        return queue_of(times_of(record), self.clock(), self.settings.timings)

    def _event(self, task_id: str, event: str) -> None:
        self.store.add_event(task_id, event, self.clock())

    def _secret(self) -> bytes:
        return self.store.secret()

    # --- the first call and the pages ------------------------------------------------------

    def start(self, who: Principal, query: ExportQuery) -> Page:
        """A new task for ``query``: its snapshot and first page (429 over the caps)."""
        obj = published(query.object_name)
        live = [r for r in (self.store.get(t) for t in self.store.task_ids()) if r is not None]
        live = [r for r in live if self._queue(r) not in (DRAINING, GONE)]
        if len(live) >= self.settings.max_tasks:
            raise ApiError(
                429,
                f"too many exports in progress ({len(live)}, at most {self.settings.max_tasks});"
                " finish or cancel one (DELETE /api/v2/exports-status/{task_id}) or retry later",
                code="EXPORT_TASKS_LIMIT",
                headers={"Retry-After": "30"},
            )
        cached = sum(r.get("cached_bytes", 0) for r in live)
        if cached >= self.settings.max_cache_bytes:
            raise ApiError(
                429,
                f"the export cache is full ({cached} of {self.settings.max_cache_bytes} bytes);"
                " retry later",
                code="EXPORT_CACHE_FULL",
                headers={"Retry-After": "30"},
            )
        task_id = uuid.uuid4().hex
        now = self.clock()
        record = {
            "caller": caller_id(who),
            "caller_name": who.name,
            "query": query.as_dict(),
            "query_digest": query.digest,
            "initiated": now,
            "last_activity": now,
            "status": None,
            "message": None,
            "accumulate": 0,
            "metric": None,
            "served": 0,
            "fetched": 0,
            "end_page": None,
            "completed_at": None,
            "canceled_at": None,
            "cached_bytes": 0,
        }
        self.store.create(task_id, record, self._ttl(record))
        self._event(task_id, ADDED)
        table = obj.table(self.tables)
        statement = snapshot_query(obj, table, query.start, query.end, query.entities)
        snapshot = None
        if statement is not None:
            with self.engine.connect() as conn:
                snapshot = conn.execute(statement).scalar()
        self.store.update(
            task_id, {"snapshot": snapshot, "columns": [c.name for c in table.columns]}
        )
        self._event(task_id, METADATA)
        return self.page(who, query, PageToken(task_id, 1, caller_id(who), query.digest))

    def parse_token(self, who: Principal, query: ExportQuery, token: str) -> PageToken:
        """The token's task and page: 400 tampered or another query's, 404 another caller's."""
        try:
            parsed = PageToken.verify(token, self._secret())
        except BadToken as exc:
            raise ApiError(400, f"{TOKEN}: {exc}", TOKEN) from None
        if parsed.caller != caller_id(who):
            raise ApiError(404, f"{TOKEN}: no export task of this caller has this token", TOKEN)
        if parsed.query != query.digest:
            raise ApiError(
                400,
                f"{TOKEN}: belongs to another query (send the same objectName, fromDate, "
                "toDate, billers, pageSize and format as the first call)",
                TOKEN,
            )
        return parsed

    def next_page(self, who: Principal, query: ExportQuery, token: str) -> Page:
        """The page a continuation token names (see parse_token and page)."""
        return self.page(who, query, self.parse_token(who, query, token))

    def _live_record(self, task_id: str) -> dict[str, Any]:
        record = self.store.get(task_id)
        if record is None:
            raise ApiError(
                410,
                f"{TOKEN}: export task {task_id} has expired or was drained; start the export "
                "again without a token",
                TOKEN,
            )
        queue = self._queue(record)
        if record.get("canceled_at") is not None:
            raise ApiError(410, f"{TOKEN}: export task {task_id} was canceled", TOKEN)
        if queue in (DRAINING, GONE):
            raise ApiError(
                410,
                f"{TOKEN}: export task {task_id} has expired (idle too long) or was drained; "
                "start the export again without a token",
                TOKEN,
            )
        return record

    def page(self, who: Principal, query: ExportQuery, token: PageToken) -> Page:
        """Page ``token.page`` of the task: from the cache, else read (the same rows again)."""
        task_id, n = token.task_id, token.page
        record = self._live_record(task_id)
        end = record.get("end_page")
        if end is not None and n > end:
            # The first token of a one-page export (biviews-status names tasks by it).
            raise ApiError(400, f"{TOKEN}: export task {task_id} has only {end} page(s)", TOKEN)
        body = self.store.get_page(task_id, n)
        if body is None and n <= record.get("fetched", 0):
            # Served before and dropped from the cache: read again, from the same key.
            body, _ = self._read(task_id, record, n)
        elif body is None:
            body = self._fetch_now(task_id, n)
        record = self.store.get(task_id) or record
        rows = record.get(f"rows:{n}", 0)
        self.store.mark_served(task_id, n, rows)
        self.store.update(task_id, {"last_activity": self.clock()}, self._ttl(record))
        stale = [int(k[5:]) for k in record if k.startswith("size:") and int(k[5:]) < n - 1]
        self.store.drop_pages(task_id, stale)
        more = f"key:{n + 1}" in record
        next_token = None
        if more:
            next_token = PageToken(task_id, n + 1, token.caller, token.query).sign(self._secret())
        self.kick(task_id)
        return Page(task_id, n, body, next_token, rows)

    def _fetch_now(self, task_id: str, n: int) -> bytes:
        """Page ``n`` fetched here (the fetcher has not got to it), or by whoever holds the
        task's lock, waited for."""
        deadline = time.monotonic() + self.settings.lock_wait_s
        while True:
            owner = self.store.acquire(task_id, self.settings.lock_wait_s)
            if owner is not None:
                try:
                    body = self.store.get_page(task_id, n)
                    if body is not None:
                        return body
                    record = self._live_record(task_id)
                    return self._fetch(task_id, record, n)
                finally:
                    self.store.release(task_id, owner)
            body = self.store.get_page(task_id, n)
            if body is not None:
                return body
            if time.monotonic() > deadline:
                raise ApiError(503, f"{TOKEN}: page {n} is still being read; retry", TOKEN)
            time.sleep(0.02)

    def _read(self, task_id: str, record: dict[str, Any], n: int) -> tuple[bytes, dict]:
        """Page ``n`` read from the warehouse and rendered; and what the task learns from it."""
        query = record["query"]
        obj = published(query["objectName"])
        table = obj.table(self.tables)
        after = None if n == 1 else _decode_key(record[f"key:{n}"])
        size = query["pageSize"]
        entities = query["billers"]
        statement = page_query(
            obj,
            table,
            datetime.fromisoformat(query["fromDate"][:-1]),
            datetime.fromisoformat(query["toDate"][:-1]),
            entities,
            record.get("snapshot"),
            after,
            size + 1,
        )
        with self.engine.connect() as conn:
            rows = conn.execute(statement).all()
        more = len(rows) > size
        rows = rows[:size]
        columns = record.get("columns") or [c.name for c in table.columns]
        learned: dict[str, Any] = {f"rows:{n}": len(rows)}
        next_token = None
        if more:
            learned[f"key:{n + 1}"] = _encode_key(key_of(obj, columns, rows[-1]))
            caller, qd = record["caller"], record["query_digest"]
            next_token = PageToken(task_id, n + 1, caller, qd).sign(self._secret())
        else:
            learned["end_page"] = n
        if query["format"] == CSV:
            body = render_csv(columns, rows)
        else:
            head = {
                "objectName": query["objectName"],
                "taskId": task_id,
                "page": n,
                "rowCount": len(rows),
                TOKEN: next_token,
            }
            body = render_json(head, columns, rows)
        return body, learned

    def _fetch(self, task_id: str, record: dict[str, Any], n: int) -> bytes:
        """Page ``n`` read, cached and announced (the caller holds the task's lock)."""
        self._event(task_id, scanning(n))
        body, learned = self._read(task_id, record, n)
        if (self.store.get(task_id) or {}).get("canceled_at") is not None:
            return body
        self.store.update(task_id, learned)
        self.store.put_page(task_id, n, body, self._ttl(record))
        self._event(task_id, committing(n))
        if "end_page" in learned:
            if n == 1 and learned["rows:1"] == 0:
                self._event(task_id, NO_RECORD)
            self._event(task_id, END_OF_QUERY)
            self.store.update(task_id, {"completed_at": self.clock()})
            self._event(task_id, COMPLETED_EVENT)
        return body

    # --- fetch-ahead -------------------------------------------------------------------------

    def kick(self, task_id: str) -> None:
        """Fetch ahead for the task in the background (one fetcher per task per process)."""
        with self._lock:
            if task_id in self._running:
                self._again.add(task_id)
                return
            self._running.add(task_id)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.settings.workers, thread_name_prefix="export-fetch"
                )
        self._executor.submit(self._fetch_ahead_loop, task_id)

    def _fetch_ahead_loop(self, task_id: str) -> None:
        while True:
            try:
                self.fetch_ahead(task_id)
            except Exception as exc:  # a background thread has nobody to raise to
                log.warning("export %s: fetch-ahead stopped: %s", task_id, exc)
            with self._lock:
                if task_id in self._again:
                    self._again.discard(task_id)
                    continue
                self._running.discard(task_id)
                return

    def fetch_ahead(self, task_id: str) -> None:
        """Fetch pages after the last served, up to ``pages_ahead`` and ``bytes_per_task``."""
        owner = self.store.acquire(task_id, self.settings.lock_wait_s)
        if owner is None:
            return  # another thread or process fetches this task
        try:
            while True:
                record = self.store.get(task_id)
                if (
                    record is None
                    or record.get("canceled_at") is not None
                    or record.get("end_page") is not None
                    or self._queue(record) in (DRAINING, GONE)
                ):
                    return
                n = record.get("fetched", 0) + 1
                ahead = n > record.get("served", 0) + self.settings.pages_ahead
                full = record.get("cached_bytes", 0) >= self.settings.bytes_per_task
                if ahead or full:
                    if record.get("status") != MAX_REACHED:
                        self._event(task_id, MAX_REACHED)
                    return
                self._fetch(task_id, record, n)
        finally:
            self.store.release(task_id, owner)

    def close(self) -> None:
        """Stop the fetch-ahead threads (the app's shutdown). A later page starts new ones: an
        app may be started again (schemathesis runs its lifespan around every call)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._running.clear()  # loops that were canceled before they ran
            self._again.clear()

    # --- activity monitoring -------------------------------------------------------------

    @staticmethod
    def _mine(who: Principal, record: dict[str, Any]) -> bool:
        """Whether ``who`` started the task: only that caller sees, reads or cancels it, whatever
        billers it may read (another caller's task is 404, as its tokens are)."""
        return record["caller"] == caller_id(who)

    def describe(self, task_id: str, record: dict[str, Any], events: bool = False) -> dict:
        now = self.clock()
        query = record["query"]
        out = {
            "task_id": task_id,
            "queue": self._queue(record),
            "accumulate": record.get("accumulate", 0),
            "metric": record.get("metric"),
            "activity_tracker": {
                "elapsed_time": str(timedelta(seconds=max(0.0, now - record["last_activity"]))),
                "initiated_time": stamp(record["initiated"]),
                "last_activity": stamp(record["last_activity"]),
            },
            "query_config": {
                "filter_params": {k: v for k, v in query.items() if k != "objectName"},
                "object_name": query["objectName"],
            },
            "status": record.get("status"),
            "message": record.get("message"),
            "pages_served": record.get("served", 0),
            "pages_fetched": record.get("fetched", 0),
            "pages_total": record.get("end_page"),
            "cached_bytes": record.get("cached_bytes", 0),
        }
        if events:
            out["events"] = [{"event": e, "at": stamp(at)} for e, at in self.store.events(task_id)]
        return out

    def status(self, who: Principal, view: View | None = None) -> dict[str, list[dict]]:
        """The tasks the caller started, by queue, each as ``view`` describes it (default:
        ``describe``; the seed's own form is biviews.seed_task)."""
        view = view or ExportService.describe
        queues: dict[str, list[dict]] = {q: [] for q in QUEUES}
        for task_id in self.store.task_ids():
            record = self.store.get(task_id)
            if record is None:
                continue
            queue = self._queue(record)
            if queue == GONE:
                self.store.delete(task_id)
                continue
            if self._mine(who, record):
                queues[queue].append((record["initiated"], view(self, task_id, record)))
        return {
            q: [item for _, item in sorted(items, key=lambda i: i[0])]
            for q, items in queues.items()
        }

    def _own(self, who: Principal, task_id: str) -> dict[str, Any]:
        record = self.store.get(task_id)
        if record is None or not self._mine(who, record) or self._queue(record) == GONE:
            raise ApiError(404, f"task_id: no export task {task_id} of this caller", "task_id")
        return record

    def first_token(self, task_id: str, record: dict[str, Any]) -> str:
        """The continuation token issued with the task's first page (seed 003 names a task by it):
        tokens are deterministic, so it is the same even when the export had a single page."""
        return PageToken(task_id, 2, record["caller"], record["query_digest"]).sign(self._secret())

    def resolve(self, ref: str) -> str:
        """The task id that ``ref`` names: a continuation token of the task, or its id."""
        try:
            return PageToken.verify(ref, self._secret()).task_id
        except BadToken:
            return ref

    def task(self, who: Principal, task_id: str, view: View | None = None) -> dict:
        view = view or ExportService.describe
        return view(self, task_id, self._own(who, task_id), events=True)

    def cancel(self, who: Principal, task_id: str, view: View | None = None) -> dict:
        """Cancel the task: fetch-ahead stops before its next page, the cache is freed."""
        record = self._own(who, task_id)
        if record.get("canceled_at") is None:
            fields = {"canceled_at": self.clock(), "message": f"canceled by {who.name}"}
            self.store.update(task_id, fields, self._ttl({**record, **fields}))
            self._event(task_id, CANCELED)
        pages = [int(k[5:]) for k in record if k.startswith("size:")]
        self.store.drop_pages(task_id, pages)
        view = view or ExportService.describe
        return view(self, task_id, self.store.get(task_id) or record, events=True)


def key_of(obj: PublishedObject, columns: list[str], row) -> list:
    """The key values of a row, in key order."""
    return [row[columns.index(name)] for name in obj.key]
