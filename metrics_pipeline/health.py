"""The platform's health in figures, pure: per family how fresh the data is, how many hours
wait in the backlog and how many are not covered and why (from the coverage ledger's rows), as
the API's ``GET /metrics`` exposes them to Prometheus.

An hour counts as covered when it has written ledger rows and none busy, unreachable,
misconfigured or failed (``stale`` rows still hold their figures). The API reads no catalog:
a biller never computed in an hour is the coverage check's and the backlog check's to name.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from metrics_pipeline.coverage import NOT_WRITTEN, STALE

#: Every state ``metrics_pipeline_uncovered_hours`` reports (0 when no hour is in it).
UNCOVERED_STATES = (*NOT_WRITTEN, STALE)


@dataclass
class FamilyHealth:
    family: str
    #: Seconds from the end of the newest fully covered hour to now; +Inf while no hour is
    #: (so that a "too old" alert fires rather than finding no series).
    freshness_s: float
    #: Hours of the backlog window (BacklogSettings) not fully covered.
    backlog_hours: int
    #: state -> hours with at least one entity in that state, however old.
    uncovered_hours: dict[str, int] = field(default_factory=dict)


def family_health(
    family: str,
    now: datetime,
    states: Iterable[tuple[datetime, str]],
    written: Iterable[datetime],
    newest_written: datetime | None,
    backlog_window: tuple[datetime, datetime],
    step: timedelta = timedelta(hours=1),
) -> FamilyHealth:
    """One family's figures from its not-written ``states`` ((hour, state) pairs), the hours
    holding a written row (``written``: those of the backlog window and of the look-back before
    ``newest_written``) and the newest of those."""
    by_state: dict[str, set[datetime]] = {s: set() for s in UNCOVERED_STATES}
    for hour, state in states:
        by_state.setdefault(state, set()).add(hour)
    not_written = set().union(*(by_state[s] for s in NOT_WRITTEN))
    covered = set(written) - not_written
    newest = max(covered, default=None)
    if newest is None and newest_written is not None and newest_written not in not_written:
        newest = newest_written
    start, end = backlog_window
    hours = []
    at = start
    while at < end:
        hours.append(at)
        at += step
    return FamilyHealth(
        family=family,
        freshness_s=math.inf if newest is None else (now - (newest + step)).total_seconds(),
        backlog_hours=sum(1 for h in hours if h not in covered),
        uncovered_hours={s: len(by_state[s]) for s in sorted(by_state)},
    )


def burn_windows(alerts: Iterable[Mapping]) -> dict[str, float]:
    """{window label ("1h", "5m", ...): burn rate} from a scenario's SLO alerts (each alert has
    a long and a short window, in seconds); windows without a rate are left out."""
    out = {}
    for alert in alerts:
        for seconds, rate in (
            (alert["long"], alert["longBurn"]),
            (alert["short"], alert["shortBurn"]),
        ):
            if rate is not None:
                out[window_label(seconds)] = float(rate)
    return out


def window_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"
