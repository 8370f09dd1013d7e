"""The work behind the assets: read shards in parallel and write hourly rows; roll levels up.

No Dagster here beyond the resources passed in, so the CLI, the assets and the benchmarks run the
same code and the tests can drive it directly.
"""

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from metrics_pipeline.coverage import (
    BUSY,
    DATAPUMP,
    FAILED,
    UNREACHABLE,
    WRITTEN,
    LedgerEntry,
)
from metrics_pipeline.resources.databases import Biller, CatalogResource, ShardsResource
from metrics_pipeline.resources.engines import ShardUnreachable
from metrics_pipeline.resources.warehouse import WarehouseResource, WriteStats
from metrics_pipeline.semantics import HOURLY, Level, Partial, rollup

HOUR = timedelta(hours=1)
Log = Callable[[str], None]


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
    shards_read: set[str] = field(default_factory=set)
    #: BillerId -> rows of its shard whose CreatedDate is NULL or not a timestamp (in no hour).
    undated: dict[int, int] = field(default_factory=dict)

    @property
    def billers_processed(self) -> int:
        return len({b for b, _ in self.request_counts} - set(self.failed))

    def summary(self) -> str:
        """The job log's Summary: what succeeded, and every failed biller with its reason."""
        if not self.failed:
            return (
                f"Job Succeeded: {self.billers_processed} biller(s), "
                f"{len(self.request_counts)} partition(s)"
            )
        reasons = "; ".join(f"biller {b}: {why}" for b, why in sorted(self.failed.items()))
        return f"Job Failed for {len(self.failed)} biller(s): {reasons}"

    def failure_tags(self) -> dict[str, str]:
        """Run tags that let sensors (and people filtering runs) tell why a run failed."""
        kinds = []
        if self.busy:
            kinds.append("shard busy")
        if self.unreachable:
            kinds.append("shard unreachable")
        if set(self.failed) - set(self.busy) - set(self.unreachable):
            kinds.append("error")
        tags = {"metrics/failure": ", ".join(kinds)}
        if self.busy:
            tags["metrics/busy_billers"] = ",".join(map(str, sorted(self.busy)))
        if self.unreachable:
            tags["metrics/unreachable_billers"] = ",".join(map(str, sorted(self.unreachable)))
        return tags

    def add_stats(self, stats: WriteStats) -> None:
        for table, counts in stats.by_table.items():
            mine = self.written.setdefault(table, {"inserted": 0, "updated": 0, "unchanged": 0})
            for k, v in counts.items():
                mine[k] += v


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


def aggregate_hourly(
    requested: Mapping[int, list[datetime]],
    catalog: CatalogResource,
    shards: ShardsResource,
    warehouse: WarehouseResource,
    log: Log = lambda _m: None,
    sleep: Callable[[float], None] = time.sleep,
    run_id: str | None = None,
) -> Outcome:
    """Read every requested (biller, hour) from its shard and upsert the three hourly rows.

    Shards are read in parallel, at most ``shards.max_parallel_shards`` at once; each shard gets
    one aggregate query per chunk of hours for all its requested billers. A biller whose
    Processing flag is set is not read; busy billers are tried again after all the others
    (``shards.busy_retries`` times, ``shards.busy_retry_delay_s`` apart) and fail as busy if the
    flag stays set. A shard that cannot be reached fails only its billers; the others are written.
    Every requested biller-hour gets a ledger row: ``written`` in the same transaction as its
    aggregate rows, or why it was not.
    """
    outcome = Outcome()
    directory: dict[int, Biller] = {b.biller_id: b for b in catalog.enabled_billers()}
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

    def read_shard(shard: str, billers: list[int]) -> None:
        wanted = {b: set(requested[b]) for b in billers}
        lo, hi = _span([h for b in billers for h in requested[b]], HOUR)
        for chunk_start, chunk_end, partials in shards.read_hourly(shard, billers, lo, hi):
            batch = {
                (b, h): partials.get((b, h), Partial())
                for b in billers
                for h in wanted[b]
                if chunk_start <= h < chunk_end
            }
            if not batch:
                continue
            ledger = [
                LedgerEntry(str(b), h, WRITTEN, source_rows=p.request_count)
                for (b, h), p in batch.items()
            ]
            with write_lock:
                stats = warehouse.write_partials(HOURLY, batch, ledger, run_id=run_id)
                outcome.add_stats(stats)
                for key, partial in batch.items():
                    outcome.request_counts[key] = partial.request_count

    def attempt(shard: str, billers: list[int]) -> list[int]:
        """Read the billers of a shard that are not busy; return the busy ones."""
        busy = shards.busy_billers(shard, billers)
        free = [b for b in billers if b not in busy]
        if free:
            read_shard(shard, free)
            undated = shards.undated_rows(shard, free)
            with write_lock:
                outcome.undated.update(undated)
        return sorted(busy)

    pending = dict(by_shard)
    for round_no in range(1 + max(0, shards.busy_retries)):
        if round_no:
            # Busy billers are tried again after all the others, with a bounded wait.
            log(
                f"{sum(map(len, pending.values()))} busy biller(s); retrying in "
                f"{shards.busy_retry_delay_s:g}s ({round_no}/{shards.busy_retries})"
            )
            sleep(shards.busy_retry_delay_s)
        still_busy: dict[str, list[int]] = {}
        workers = max(1, min(shards.max_parallel_shards, len(pending)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard") as pool:
            futures = {pool.submit(attempt, s, b): (s, b) for s, b in pending.items()}
            for future in as_completed(futures):
                shard, billers = futures[future]
                try:
                    busy = future.result()
                    outcome.shards_read.add(shard)
                    if busy:
                        still_busy[shard] = busy
                except ShardUnreachable as exc:
                    log(f"shard {shard} unreachable: {exc.reason}")
                    for b in billers:
                        outcome.failed[b] = f"shard {shard} unreachable: {exc.reason}"
                        outcome.unreachable[b] = shard
        pending = still_busy
        if not pending:
            break
    for shard, billers in pending.items():
        for b in billers:
            outcome.failed[b] = f"shard busy: Processing flag still set in shard {shard}"
            outcome.busy[b] = shard
    warehouse.record_ledger(DATAPUMP, HOURLY, _failure_entries(requested, outcome), run_id)
    return outcome


def _failure_entries(requested: Mapping[int, list[datetime]], outcome: Outcome):
    """Ledger rows for the billers that were not written, with their reason."""
    for biller, why in outcome.failed.items():
        state = (
            BUSY
            if biller in outcome.busy
            else UNREACHABLE
            if biller in outcome.unreachable
            else FAILED
        )
        for hour in requested.get(biller, ()):
            yield LedgerEntry(str(biller), hour, state, why)


def roll_up(
    requested: Mapping[int, list[datetime]],
    target_level: Level,
    warehouse: WarehouseResource,
    billers_per_batch: int = 20,
    windows_per_batch: int = 7,
) -> Outcome:
    """Target rows (daily or weekly) as exact sums of the stored source-level rows.

    Never reads the shards. Works in batches of billers and windows so memory stays bounded.
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
                grouped[(biller, floor(start))].append(partial)
            wanted = set(window_starts)
            batch = {
                (b, s): rollup(grouped.get((b, s), []))
                for b in group
                for s in requested[b]
                if s in wanted
            }
            stats = warehouse.write_partials(target_level, batch)
            outcome.add_stats(stats)
            for key, partial in batch.items():
                outcome.request_counts[key] = partial.request_count
                outcome.sources_found[key] = len(grouped.get(key, []))
    return outcome
