"""The work behind the assets: read shards in parallel and write hourly rows; roll levels up.

No Dagster here beyond the resources passed in, so the CLI, the assets and the benchmarks run the
same code and the tests can drive it directly.
"""

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from metrics_pipeline.coverage import (
    BUSY,
    DATAPUMP,
    FAILED,
    MISCONFIGURED,
    STALE,
    UNREACHABLE,
    WRITTEN,
    LedgerEntry,
)
from metrics_pipeline.datapump.refresh import ChangeSettings
from metrics_pipeline.datapump.shards import Biller, CatalogResource, ShardChunk, ShardsResource
from metrics_pipeline.resources.cursor import ShardCursor
from metrics_pipeline.resources.engines import (
    ConfigurationError,
    DatabaseUnreachable,
    ShardMisconfigured,
    ShardUnreachable,
)
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY, Level, Partial, rollup, round2
from metrics_pipeline.sql.dialect import PlainForm
from metrics_pipeline.tags import EMPTY_SHARDS_TAG, UNDATED_TAG
from metrics_pipeline.writes import WriteCounts

HOUR = timedelta(hours=1)
Log = Callable[[str], None]


#: A shard without a row of any of its billers over this many hours is reported.
EMPTY_SHARD_HOURS = 24


@dataclass
class Outcome:
    """What one run did: per-partition request counts, rows written, and what failed and why."""

    request_counts: dict[tuple[int, datetime], int] = field(default_factory=dict)
    #: For rollups: how many source rows each target window found.
    sources_found: dict[tuple[int, datetime], int] = field(default_factory=dict)
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    #: BillerId -> one-line reason, for billers whose partitions were not written.
    failed: dict[int, str] = field(default_factory=dict)
    #: BillerId -> shard name, for failures that came from an unreachable shard.
    unreachable: dict[int, str] = field(default_factory=dict)
    #: BillerId -> shard name, for billers whose Processing flag stayed set through the retries.
    busy: dict[int, str] = field(default_factory=dict)
    #: BillerId -> shard name, for billers whose shard lacks a configured table or column.
    misconfigured: dict[int, str] = field(default_factory=dict)
    shards_read: set[str] = field(default_factory=set)
    #: BillerId -> rows of its shard whose CreatedDate is NULL or not a timestamp (in no hour).
    undated: dict[int, int] = field(default_factory=dict)
    #: Shard -> its billers, for a shard read without error that holds no row of any of its
    #: billers in the whole window (a wrong ShardName or URL template reads an empty database).
    empty_shards: dict[str, list[int]] = field(default_factory=dict)
    #: For rollups: (biller, window) with no written hour below it, so no row.
    uncovered: set[tuple[int, datetime]] = field(default_factory=set)

    @property
    def billers_processed(self) -> int:
        return len({b for b, _ in self.request_counts} - set(self.failed))

    def summary(self) -> str:
        """The job log's Summary: what succeeded, and every failed biller with its reason."""
        faults = {b: why for b, why in self.failed.items() if b not in self.busy}
        if not faults:
            skipped = (
                f"; skipped busy: {', '.join(map(str, sorted(self.busy)))}" if self.busy else ""
            )
            return (
                f"Job Succeeded: {self.billers_processed} biller(s), "
                f"{len(self.request_counts)} partition(s){skipped}"
            )
        reasons = "; ".join(f"biller {b}: {why}" for b, why in sorted(self.failed.items()))
        return f"Job Failed for {len(faults)} biller(s): {reasons}"

    def failure_tags(self) -> dict[str, str]:
        """Run tags that let sensors (and people filtering runs) tell why a run failed."""
        kinds = []
        if self.busy:
            kinds.append("shard busy")
        if self.unreachable:
            kinds.append("shard unreachable")
        if self.misconfigured:
            kinds.append("shard misconfigured")
        if set(self.failed) - set(self.busy) - set(self.unreachable) - set(self.misconfigured):
            kinds.append("error")
        tags = {"metrics/failure": ", ".join(kinds)}
        if self.busy:
            tags["metrics/busy_billers"] = ",".join(map(str, sorted(self.busy)))
        if self.unreachable:
            tags["metrics/unreachable_billers"] = ",".join(map(str, sorted(self.unreachable)))
        return tags

    def finding_tags(self) -> dict[str, str]:
        """Run tags for what a successful run found odd in its shards, for the CLI's summary:
        ``metrics/undated_rows`` (``biller:rows,…``) and ``metrics/empty_shards``
        (``shard:biller biller;…``)."""
        tags = {}
        undated = {b: n for b, n in sorted(self.undated.items()) if n}
        if undated:
            tags[UNDATED_TAG] = ",".join(f"{b}:{n}" for b, n in undated.items())
        if self.empty_shards:
            tags[EMPTY_SHARDS_TAG] = ";".join(
                f"{shard}:{' '.join(map(str, billers))}"
                for shard, billers in sorted(self.empty_shards.items())
            )
        return tags

    def add_stats(self, stats: WriteCounts) -> None:
        for table, counts in stats.by_table.items():
            mine = self.written.setdefault(
                table, {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0}
            )
            for k, v in counts.items():
                mine[k] = mine.get(k, 0) + v


def _span(starts: list[datetime], length: timedelta) -> tuple[datetime, datetime]:
    return min(starts), max(starts) + length


def _batches(starts: list[datetime], size: int, length: timedelta) -> list[list[datetime]]:
    """Sorted window starts cut into batches of at most ``size`` windows, spanning at most
    ``size`` windows of time each."""
    batches: list[list[datetime]] = []
    for start in starts:
        if batches and len(batches[-1]) < size and start < batches[-1][0] + size * length:
            batches[-1].append(start)
        else:
            batches.append([start])
    return batches


def split_span(lo: datetime, hi: datetime, parts: int) -> list[tuple[datetime, datetime]]:
    """[lo, hi) cut at whole hours into at most ``parts`` spans of nearly equal length."""
    hours = int((hi - lo) / HOUR)
    parts = max(1, min(parts, hours))
    cuts = [lo + HOUR * (hours * i // parts) for i in range(parts + 1)]
    return list(zip(cuts, cuts[1:], strict=False))


def hour_segments(
    wanted: Mapping[int, set[datetime]], gap: int = 6
) -> list[tuple[datetime, datetime, list[int]]]:
    """Contiguous spans of requested hours (merged across gaps of at most ``gap`` hours), each
    with the billers that want an hour in it: what one shard read covers."""
    hours = sorted({h for hs in wanted.values() for h in hs})
    spans: list[list[datetime]] = []
    for h in hours:
        if spans and h - spans[-1][1] <= gap * HOUR:
            spans[-1][1] = h
        else:
            spans.append([h, h])
    out = []
    for lo, hi in spans:
        billers = sorted(b for b, hs in wanted.items() if any(lo <= h <= hi for h in hs))
        out.append((lo, hi + HOUR, billers))
    return out


def read_parts(workers: int, shards: int) -> int:
    """Reads per shard span: two per worker at least, so that no worker idles while one shard
    finishes alone."""
    return max(1, -(-2 * workers // shards)) if workers > 1 else 1


def read_spans(
    wanted: Mapping[int, set[datetime]], parts: int
) -> list[tuple[datetime, datetime, list[int]]]:
    """A shard's reads: one per span of requested hours (only those are read: a late row three
    weeks old costs one hour's read), cut in ``parts``, each with the billers that want it."""
    return [
        (a, b, billers)
        for lo, hi, billers in hour_segments(wanted)
        for a, b in split_span(lo, hi, parts)
    ]


class ReadAhead:
    """The first shard reads of a command's hourly runs, each started before its run: the first
    run's while the command starts (the instance, the run), the next run's as soon as the run
    before it has read its own, so that they go on while that run stores its events and checks.
    They only read (busy flags first: a shard with a busy biller is left to the run); a run
    checks its busy flags, takes each read whose shard, billers and hours are those it would
    read itself, and writes it. A shard without a cursor yet gets its first cursor here, before
    any of its rows is read, and the run saves that one with its rows (``first_cursors``). At
    most ``reads_per_worker`` reads per shard worker are held ahead."""

    def __init__(
        self,
        runs: Sequence[Mapping[int, Sequence[datetime]]],
        catalog: CatalogResource,
        shards: ShardsResource,
        warehouse: WarehouseResource,
        with_cursors: bool = True,
        reads_per_worker: int = 2,
    ):
        self._runs = [{b: sorted(hs) for b, hs in run.items()} for run in runs]
        self._directory = {b.biller_id: b.shard for b in catalog.enabled_billers()}
        # Its own resource: a run's is torn down (its engines disposed) when the run ends.
        self._shards = ShardsResource(**shards.model_dump())
        self._warehouse = warehouse
        workers = max(1, shards.max_parallel_shards)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read-ahead")
        self._limit = reads_per_worker * workers
        self._reads: dict[tuple, Future] = {}
        #: The first cursors of the shards that had none, taken before their rows were read.
        self.cursors: dict[str, ShardCursor] | None = None
        self.taken = 0
        try:
            if with_cursors:
                self.cursors = first_cursors(catalog, self._shards, warehouse)
            if self._runs:
                self._start(self._runs[0])
        except (DatabaseUnreachable, ConfigurationError):
            # Nothing read ahead: the runs read, and report what fails.
            self.cursors = None

    def after(self, requested: Mapping[int, Sequence[datetime]]) -> None:
        """The run of ``requested`` has read its shards: start the next run's first reads."""
        run = {b: sorted(hs) for b, hs in requested.items()}
        if run in self._runs[:-1]:
            self._start(self._runs[self._runs.index(run) + 1])

    def _start(self, upcoming: Mapping[int, list[datetime]]) -> None:
        """The reads ``aggregate_hourly`` makes for ``upcoming``: a shard read with its first
        cursor in one part per span of hours (``read_with_cursor``), the others in
        ``read_parts``."""
        by_shard: dict[str, list[int]] = defaultdict(list)
        for biller in sorted(upcoming):
            if biller in self._directory:
                by_shard[self._directory[biller]].append(biller)
        if not by_shard:
            return
        first = set()
        if self.cursors:
            first = set(self.cursors) - set(self._warehouse.read_cursors(DATAPUMP))
        workers = max(1, min(self._shards.max_parallel_shards, len(by_shard)))
        parts = read_parts(workers, len(by_shard))
        per_shard = [
            [
                (shard, lo, hi, b)
                for lo, hi, b in read_spans(
                    {x: set(upcoming[x]) for x in bs}, 1 if shard in first else parts
                )
            ]
            for shard, bs in by_shard.items()
        ]
        # Every shard's first read, then every shard's second: the run starts them so.
        order = [r[i] for i in range(max(map(len, per_shard))) for r in per_shard if i < len(r)]
        for shard, lo, hi, billers in order[: self._limit]:
            key = (shard, tuple(billers), lo, hi)
            self._reads[key] = self._pool.submit(self._read, shard, billers, lo, hi)

    def _read(self, shard: str, billers: list[int], lo: datetime, hi: datetime):
        if self._shards.busy_billers(shard, billers):
            return None
        return list(self._shards.read_hourly(shard, billers, lo, hi))

    def take(
        self, shard: str, billers: list[int], lo: datetime, hi: datetime
    ) -> list[ShardChunk] | None:
        """The chunks read ahead for exactly this read, or None (the run reads it itself; a
        read ahead that failed is read again, so that the run reports what fails)."""
        future = self._reads.pop((shard, tuple(billers), lo, hi), None)
        if future is None:
            return None
        try:
            chunks = future.result()
        except Exception:  # noqa: BLE001 - the run's own read raises it again, typed
            return None
        if chunks is not None:
            self.taken += 1
        return chunks

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._reads.clear()
        self._shards.teardown_after_execution(None)


#: The read-ahead of the command running in this context (``read_ahead``), if any.
_AHEAD: ContextVar[ReadAhead | None] = ContextVar("metrics_read_ahead", default=None)


@contextmanager
def read_ahead(
    runs: Sequence[Mapping[int, Sequence[datetime]]],
    catalog: CatalogResource,
    shards: ShardsResource,
    warehouse: WarehouseResource,
    with_cursors: bool = True,
) -> Iterator[ReadAhead]:
    """Hourly runs of ``runs``' requested cells, executed one after the other in this context,
    take their first shard reads from a ``ReadAhead``; ``with_cursors``: the runs save first
    cursors (``first_cursors``)."""
    ahead = ReadAhead(runs, catalog, shards, warehouse, with_cursors)
    token = _AHEAD.set(ahead)
    try:
        yield ahead
    finally:
        _AHEAD.reset(token)
        ahead.close()


def aggregate_hourly(
    requested: Mapping[int, list[datetime]],
    catalog: CatalogResource,
    shards: ShardsResource,
    warehouse: WarehouseResource,
    log: Log = lambda _m: None,
    sleep: Callable[[float], None] = time.sleep,
    run_id: str | None = None,
    cursors: Mapping[str, ShardCursor] | None = None,
) -> Outcome:
    """Read every requested (biller, hour) from its shard and upsert the three hourly rows.

    Shards are read in parallel, at most ``shards.max_parallel_shards`` at once; each shard gets
    one aggregate query per chunk of hours for all its requested billers. A biller whose
    Processing flag is set is not read; busy billers are tried again after all the others
    (``shards.busy_retries`` times, ``shards.busy_retry_delay_s`` apart) and fail as busy if the
    flag stays set. A shard that cannot be reached fails only its billers; the others are written.
    Every requested biller-hour gets a ledger row: ``written`` in the same transaction as its
    aggregate rows, or why it was not. ``cursors`` ({shard: position}) are advanced with the
    rows written from each shard, in the same transaction (not at all for a shard that could not
    be read).
    """
    cursors = dict(cursors or {})
    outcome = Outcome()
    directory: dict[int, Biller] = {b.biller_id: b for b in catalog.enabled_billers()}
    # A template that cannot tell the catalog's shards apart is refused before any write.
    shards.check_template({b.shard for b in directory.values()})
    by_shard: dict[str, list[int]] = defaultdict(list)
    for biller_id in sorted(requested):
        if biller_id not in directory:
            outcome.failed[biller_id] = "not an enabled biller in the catalog"
        else:
            by_shard[directory[biller_id].shard].append(biller_id)
    if not by_shard:
        return outcome
    warehouse.ensure_schema()
    write_lock = threading.Lock()
    ahead = _AHEAD.get()  # here: the shard threads do not see this thread's context

    def write(batch, cursor=None) -> None:
        for partial in batch.values():
            # An hour read from its shard (calls or none) is a written, whole hour.
            partial.covered_hours = partial.expected_hours = 1
        ledger = [
            LedgerEntry(str(b), h, WRITTEN, source_rows=p.request_count)
            for (b, h), p in batch.items()
        ]
        with write_lock:
            stats = warehouse.write_partials(HOURLY, batch, ledger, run_id=run_id, cursor=cursor)
            outcome.add_stats(stats)
            for key, partial in batch.items():
                outcome.request_counts[key] = partial.request_count

    def read_span(shard: str, wanted, lo: datetime, hi: datetime, billers, sink, progress) -> int:
        """Read [lo, hi) of ``billers`` from the shard chunk by chunk, each chunk's requested
        cells to ``sink`` and its form to the shard's ``progress``; returns the calls read."""
        rows = 0
        chunks = ahead.take(shard, billers, lo, hi) if ahead is not None else None
        for chunk in shards.read_hourly(shard, billers, lo, hi) if chunks is None else chunks:
            batch = {
                (b, h): chunk.partials.get((b, h), Partial())
                for b in billers
                for h in wanted[b]
                if chunk.start <= h < chunk.end
            }
            if batch:
                rows += sum(p.request_count for p in batch.values())
                sink(batch)
            progress.read(chunk, billers)
        return rows

    def read_with_cursor(shard: str, wanted, cursor, progress) -> int:
        """A refresh's read (few cells): the shard's cells and its cursor in one transaction, so
        a crash leaves both or neither."""
        together: dict = {}
        rows = sum(
            read_span(shard, wanted, lo, hi, billers, together.update, progress)
            for lo, hi, billers in read_spans(wanted, 1)
        )
        if together:
            write(together, cursor)
        else:
            warehouse.advance_cursor(*cursor)
        return rows

    def reads_of(shard: str, wanted, parts: int, progress) -> list:
        """The shard's reads as tasks: one (with its cursor) for a refresh; else its
        ``read_spans``, cut in ``parts`` so that the pool stays full until the last shard is
        done."""
        if shard in cursors:
            cursor = (DATAPUMP, shard, cursors[shard])
            return [lambda: read_with_cursor(shard, wanted, cursor, progress)]
        return [
            lambda a=a, b=b, billers=billers: read_span(
                shard, wanted, a, b, billers, write, progress
            )
            for a, b, billers in read_spans(wanted, parts)
        ]

    def read_round(pending: dict[str, list[int]]) -> dict[str, list[int]]:
        """Every shard of ``pending`` once: its busy billers (returned), the others read and
        written, its undated rows counted; a shard that fails fails only its own billers."""
        still_busy: dict[str, list[int]] = {}
        workers = max(1, min(shards.max_parallel_shards, len(pending)))
        parts = read_parts(workers, len(pending))
        state = {s: _ShardProgress(b) for s, b in pending.items()}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard") as pool:
            futures = {
                pool.submit(shards.busy_billers, s, b): ("busy", s) for s, b in pending.items()
            }
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    kind, shard = futures.pop(future)
                    progress = state[shard]
                    if progress.failed:
                        continue  # the shard failed in another of its tasks
                    try:
                        result = future.result()
                    except (ShardUnreachable, ShardMisconfigured) as exc:
                        progress.failed = True
                        still_busy.pop(shard, None)  # failed as a whole, as its busy billers
                        fail_shard(shard, progress.billers, exc)
                        continue
                    if kind == "busy":
                        progress.free = [b for b in progress.billers if b not in result]
                        if result:
                            still_busy[shard] = sorted(result)
                        wanted = {b: set(requested[b]) for b in progress.free}
                        tasks = reads_of(shard, wanted, parts, progress) if wanted else []
                        progress.left = len(tasks)
                        for task in tasks:
                            futures[pool.submit(task)] = ("read", shard)
                        if not tasks:
                            outcome.shards_read.add(shard)
                    elif kind == "read":
                        progress.rows += result
                        progress.left -= 1
                        if not progress.left:
                            hours = [h for b in progress.free for h in requested[b]]
                            lo, hi = min(hours), max(hours) + HOURLY.length
                            futures[
                                pool.submit(
                                    shards.undated_rows,
                                    shard,
                                    progress.free,
                                    lo,
                                    hi,
                                    progress.verified(lo, hi),
                                )
                            ] = ("undated", shard)
                    else:
                        outcome.undated.update(result)
                        outcome.shards_read.add(shard)
                        longest = max(len(requested[b]) for b in progress.free)
                        if (
                            not progress.rows
                            and shard not in cursors
                            and longest >= EMPTY_SHARD_HOURS
                        ):
                            # Not one call of any of its billers in a day or more: worth a look
                            # (a quiet hour is not).
                            outcome.empty_shards[shard] = sorted(progress.free)
        return still_busy

    def fail_shard(shard: str, billers: list[int], exc) -> None:
        if isinstance(exc, ShardUnreachable):
            log(f"shard {shard} unreachable: {exc.reason}")
            for b in billers:
                outcome.failed[b] = f"shard {shard} unreachable: {exc.reason}"
                outcome.unreachable[b] = shard
        else:
            log(f"shard {shard} misconfigured (not retried): {exc.reason}")
            for b in billers:
                outcome.failed[b] = f"shard {shard} misconfigured: {exc.reason}"
                outcome.misconfigured[b] = shard

    pending = dict(by_shard)
    for round_no in range(1 + max(0, shards.busy_retries)):
        if round_no:
            # Busy billers are tried again after all the others, with a bounded wait.
            log(
                f"{sum(map(len, pending.values()))} busy biller(s); retrying in "
                f"{shards.busy_retry_delay_s:g}s ({round_no}/{shards.busy_retries})"
            )
            sleep(shards.busy_retry_delay_s)
        pending = read_round(pending)
        if not pending:
            break
    for shard, billers in pending.items():
        for b in billers:
            outcome.failed[b] = f"shard busy: Processing flag still set in shard {shard}"
            outcome.busy[b] = shard
    if ahead is not None:
        ahead.after(requested)
    warehouse.record_ledger(DATAPUMP, HOURLY, _failure_entries(requested, outcome), run_id)
    return outcome


@dataclass
class _ShardProgress:
    """One shard in a round of reads: its billers, those not busy, reads still running, and
    the spans its chunks of all those billers were read on the fast path of a plain form."""

    billers: list[int]
    free: list[int] = field(default_factory=list)
    left: int = 0
    rows: int = 0
    failed: bool = False
    plain: list[tuple[datetime, datetime, PlainForm | None]] = field(default_factory=list)

    def read(self, chunk: ShardChunk, billers: list[int]) -> None:
        """Called from the shard's reading threads (list.append is atomic)."""
        whole = set(billers) == set(self.free)
        self.plain.append((chunk.start, chunk.end, chunk.plain if whole else None))

    def verified(self, lo: datetime, hi: datetime) -> PlainForm | None:
        """The one plain form every chunk of [lo, hi) was read in, if they cover it all."""
        forms = {form for _, _, form in self.plain}
        if len(forms) != 1 or None in forms:
            return None
        at = lo
        for start, end, _ in sorted(self.plain):
            if start > at:
                return None
            at = max(at, end)
        return forms.pop() if at >= hi else None


def _failure_entries(requested: Mapping[int, list[datetime]], outcome: Outcome):
    """Ledger rows for the billers that were not written, with their reason."""
    for biller, why in outcome.failed.items():
        if biller in outcome.busy:
            state = BUSY
        elif biller in outcome.unreachable:
            state = UNREACHABLE
        elif biller in outcome.misconfigured:
            state = MISCONFIGURED
        else:
            state = FAILED
        for hour in requested.get(biller, ()):
            yield LedgerEntry(str(biller), hour, state, why)


def roll_up(
    requested: Mapping[int, list[datetime]],
    target_level: Level,
    warehouse: WarehouseResource,
    now: datetime,
    first_hour: datetime,
    billers_per_batch: int = 20,
    windows_per_batch: int = 7,
) -> Outcome:
    """Target rows (daily or weekly) as exact sums of the stored source-level rows that cover
    written hours, each with CoveredHours (the written hours summed) and ExpectedHours (the
    window's hours up to and including the running hour at ``now``, from ``first_hour`` on).

    A window with no written hour has no row: an existing one is deleted, so an unread biller
    never shows as a biller without calls. Never reads the shards. Works in batches of billers
    and windows so memory stays bounded.
    """
    outcome = Outcome()
    source_level = target_level.previous
    length, floor = target_level.length, target_level.floor
    billers = sorted(requested)
    for i in range(0, len(billers), billers_per_batch):
        group = billers[i : i + billers_per_batch]
        starts = sorted({s for b in group for s in requested[b]})
        for window_starts in _batches(starts, windows_per_batch, length):
            lo, hi = _span(window_starts, length)
            sources = warehouse.read_partials(source_level, group, lo, hi)
            grouped: dict[tuple[int, datetime], list[Partial]] = defaultdict(list)
            for (biller, start), partial in sources.items():
                if partial.covered_hours > 0:
                    grouped[(biller, floor(start))].append(partial)
            wanted = set(window_starts)
            keys = [(b, s) for b in group for s in requested[b] if s in wanted]
            batch: dict[tuple[int, datetime], Partial] = {}
            for key in keys:
                if key in grouped:
                    batch[key] = rollup(grouped[key])
                    batch[key].expected_hours = target_level.expected_hours(key[1], now, first_hour)
            empty = [key for key in keys if key not in batch]
            stats = warehouse.write_partials(target_level, batch, deletes=empty)
            outcome.add_stats(stats)
            for key, partial in batch.items():
                outcome.request_counts[key] = partial.request_count
                outcome.sources_found[key] = len(grouped[key])
            for key in empty:
                outcome.uncovered.add(key)
    return outcome


@dataclass
class Changes:
    """What change detection found: the cells to recompute and where each shard's cursor goes."""

    cells: dict[int, set[datetime]] = field(default_factory=dict)
    #: shard -> where its cursor moves once its cells are written.
    cursors: dict[str, ShardCursor] = field(default_factory=dict)
    #: shard -> why it could not be asked (its cursor stays where it was).
    unreachable: dict[str, str] = field(default_factory=dict)
    new_rows: int = 0

    def add(self, biller: int, hour: datetime) -> None:
        self.cells.setdefault(biller, set()).add(hour)


def detect_changes(
    catalog: CatalogResource,
    shards: ShardsResource,
    warehouse: WarehouseResource,
    now: datetime,
    initial_lookback: timedelta,
    overlap_ids: int,
    log: Log = lambda _m: None,
) -> Changes:
    """Ask every shard, in parallel, which (biller, hour) cells received rows beyond its cursor.

    One indexed statement per shard (a range of the clustered key), plus one listing of the new
    Ids when there are some. Of the last ``overlap_ids`` Ids, a row whose transaction committed
    after a higher Id was
    read is still counted: the Ids missing below the new position stay pending and are asked for
    at the next refresh (recomputing a cell twice changes nothing). A shard seen for the first
    time looks back ``initial_lookback`` only; older history is the backlog's.
    """
    changes = Changes()
    billers = catalog.enabled_billers()
    by_shard: dict[str, list[int]] = defaultdict(list)
    for b in billers:
        by_shard[b.shard].append(b.biller_id)
    enabled = {b.biller_id for b in billers}
    positions = warehouse.read_cursors(DATAPUMP)
    since = now - initial_lookback

    def ask(shard: str):
        return shards.changed_cells(
            shard, by_shard[shard], positions.get(shard), since, overlap_ids
        )

    workers = max(1, min(shards.max_parallel_shards, len(by_shard)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="changes") as pool:
        futures = {pool.submit(ask, shard): shard for shard in by_shard}
        for future in as_completed(futures):
            shard = futures[future]
            try:
                cells, cursor = future.result()
            except (ShardUnreachable, ShardMisconfigured) as exc:
                log(f"{exc.what} not asked for changes, its cursor stays: {exc.reason}")
                changes.unreachable[shard] = exc.reason
                continue
            for (biller, hour), rows in cells.items():
                if biller in enabled:
                    changes.add(biller, hour)
                    changes.new_rows += rows
            if cursor is not None and cursor != positions.get(shard):
                changes.cursors[shard] = cursor
    return changes


def first_cursors(
    catalog: CatalogResource, shards: ShardsResource, warehouse: WarehouseResource
) -> dict[str, ShardCursor]:
    """For shards that have no cursor yet: their highest Id now, read before their rows are, so
    a run that reads every biller's history (``materialize``) leaves the refresh a cursor and
    rows that arrive during the run are found by the next refresh (or the one the command's
    ``ReadAhead`` took before it read any of their rows)."""
    have = warehouse.read_cursors(DATAPUMP)
    overlap = ChangeSettings.from_env().overlap_ids
    ahead = _AHEAD.get()
    # Taken by the command's read-ahead before it read any row: as good as one taken now.
    taken = (ahead.cursors if ahead is not None else None) or {}
    out: dict[str, ShardCursor] = {}
    for shard in sorted({b.shard for b in catalog.enabled_billers()} - set(have)):
        if shard in taken:
            out[shard] = taken[shard]
            continue
        try:
            cursor = shards.first_cursor(shard, overlap)
        except (ShardUnreachable, ShardMisconfigured):
            continue  # its billers fail as unreachable in the read itself
        if cursor is not None:
            out[shard] = cursor
    return out


@dataclass
class Reconciliation:
    """Cells whose figures differ between a shard and the warehouse, and shards not read."""

    start: datetime
    end: datetime
    #: (biller, hour) -> "shard: ..., warehouse: ..." for every cell that differs.
    differing: dict[tuple[int, datetime], str] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    cells_compared: int = 0


def _facts(p: Partial) -> tuple:
    return (
        p.request_count,
        p.failed_count,
        p.timeout_count,
        p.response_time_count,
        round2(p.total_response_time),
    )


def reconcile(
    catalog: CatalogResource,
    shards: ShardsResource,
    warehouse: WarehouseResource,
    start: datetime,
    end: datetime,
    run_id: str | None = None,
) -> Reconciliation:
    """Compare every enabled biller's hourly figures in [start, end) between its shard and the
    warehouse, and mark the cells that differ ``stale`` in the ledger (the next refresh, or the
    backlog, recomputes them). Catches what a cursor cannot: deleted and corrected rows."""
    result = Reconciliation(start, end)
    by_shard: dict[str, list[int]] = defaultdict(list)
    for b in catalog.enabled_billers():
        by_shard[b.shard].append(b.biller_id)
    stored = warehouse.read_partials(
        HOURLY, [b for bs in by_shard.values() for b in bs], start, end
    )
    lock = threading.Lock()

    def compare(shard: str) -> None:
        billers = by_shard[shard]
        source: dict[tuple[int, datetime], Partial] = {}
        for chunk in shards.read_hourly(shard, billers, start, end):
            source.update(chunk.partials)
        for b in billers:
            for hour in HOURLY.starts(start, end):
                got = _facts(source.get((b, hour), Partial()))
                have = stored.get((b, hour))
                if have is not None and not have.covered_hours:
                    continue  # its latest read failed: the retry sensor's, not stale
                want = _facts(have) if have is not None else None
                with lock:
                    result.cells_compared += 1
                    if got != want and not (want is None and got[0] == 0):
                        result.differing[(b, hour)] = (
                            f"shard {got[0]} rows/{got[1]} failed, warehouse "
                            + ("no row" if want is None else f"{want[0]} rows/{want[1]} failed")
                        )

    workers = max(1, min(shards.max_parallel_shards, len(by_shard)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
        futures = {pool.submit(compare, shard): shard for shard in by_shard}
        for future in as_completed(futures):
            try:
                future.result()
            except (ShardUnreachable, ShardMisconfigured) as exc:
                result.unreachable[futures[future]] = exc.reason
    warehouse.record_ledger(
        DATAPUMP,
        HOURLY,
        [
            LedgerEntry(str(b), h, STALE, f"reconciliation: {why}")
            for (b, h), why in result.differing.items()
        ],
        run_id,
    )
    return result
