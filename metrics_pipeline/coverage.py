"""Per-entity coverage of a window, as pure rules: the ledger's states and the coverage verdict.

A time partition holds every enabled biller; the ledger (warehouse table CoverageLedger) says for
each biller and window what its last computation did. The coverage check, the retry and backlog
sensors, the CLI and the API all judge a window with :func:`judge` over the same rows.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

WRITTEN = "written"
BUSY = "busy"
UNREACHABLE = "unreachable"
MISCONFIGURED = "misconfigured"
FAILED = "failed"
#: The source changed since the cell was written (reconciliation found other counts); the next
#: refresh recomputes it.
STALE = "stale"
STATES = (WRITTEN, BUSY, UNREACHABLE, MISCONFIGURED, FAILED, STALE)
#: States a sensor retries by itself (busy once the flag clears, unreachable with backoff).
RETRYABLE = (BUSY, UNREACHABLE)
#: States of a window whose latest computation did not write the entity: its stored rows (if
#: any, from an earlier read) no longer cover the window. ``stale`` rows still hold their last
#: figures and count as written until the next refresh recomputes them.
NOT_WRITTEN = (BUSY, UNREACHABLE, MISCONFIGURED, FAILED)

DATAPUMP = "datapump"


@dataclass(frozen=True)
class LedgerEntry:
    """What the last computation of one entity's window did."""

    entity: str
    start: datetime
    state: str
    reason: str | None = None
    source_rows: int | None = None
    #: The Dagster run that recorded it (set when read back from the warehouse).
    run_id: str | None = None


@dataclass
class Coverage:
    """The verdict on one window: which expected entities are not written, and why."""

    start: datetime
    expected: int
    written: int
    #: entity -> (state, reason) for every expected entity not written ("missing" if no row).
    gaps: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.gaps

    def by_state(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for entity, (state, _) in sorted(self.gaps.items(), key=lambda kv: _entity_order(kv[0])):
            out.setdefault(state, []).append(entity)
        return out

    def describe(self) -> str:
        if self.complete:
            return f"all {self.expected} billers written"
        parts = [f"{state}: {', '.join(ents)}" for state, ents in self.by_state().items()]
        return f"{len(self.gaps)} of {self.expected} billers not written ({'; '.join(parts)})"


def _entity_order(entity: str):
    return (0, int(entity), "") if entity.isdigit() else (1, 0, entity)


def judge(start: datetime, expected: Iterable[str], ledger: Mapping[str, LedgerEntry]) -> Coverage:
    """Coverage of one window: every expected entity needs a ``written`` ledger row."""
    expected = list(expected)
    gaps: dict[str, tuple[str, str]] = {}
    written = 0
    for entity in expected:
        entry = ledger.get(entity)
        if entry is None:
            gaps[entity] = ("missing", "never computed")
        elif entry.state != WRITTEN:
            gaps[entity] = (entry.state, entry.reason or entry.state)
        else:
            written += 1
    return Coverage(start, len(expected), written, gaps)


def severity_is_error(gap_count: int, threshold: int) -> bool:
    """A coverage or backlog check fails with ERROR (it pages) above the alert threshold."""
    return gap_count > threshold
