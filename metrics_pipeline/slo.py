"""Service-level objectives, pure, for every family: the error budget over a rolling 30 days
from summed counts, and multi-window multi-burn-rate alerts (Google SRE workbook, chapter 5)
with a minimum-request gate so that a quiet entity never pages.

Rates here are allowed error rates in [0, 1] (0.001 for a 99.9 % objective); a family that
states its objectives otherwise converts once (availability's targets are percentages)."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

BUDGET_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class BurnAlert:
    """Fires when both windows burn at least ``factor`` times the sustainable rate."""

    name: str
    factor: float
    long: timedelta
    short: timedelta
    severity: str  # "ERROR" pages, "WARN" opens a ticket


BURN_ALERTS = (
    BurnAlert("page", 14.4, timedelta(hours=1), timedelta(minutes=5), "ERROR"),
    BurnAlert("ticket", 6.0, timedelta(hours=6), timedelta(minutes=30), "WARN"),
)
#: Every window the alerts and the budget need, longest first.
WINDOWS = tuple(
    sorted(
        {BUDGET_WINDOW, *(a.long for a in BURN_ALERTS), *(a.short for a in BURN_ALERTS)},
        reverse=True,
    )
)

Counts = tuple[int, int]  # (total requests, failed requests)


def at_grain(window: timedelta, grain: timedelta) -> timedelta:
    """The window as a family whose rows are ``grain`` long reads it: rounded up to whole
    rows, at least one (at hourly grain the 5-minute and 30-minute windows are the last hour)."""
    rows = -(-window // grain)
    return max(1, rows) * grain


def budget_remaining(allowed: float, total: int, failed: int) -> float | None:
    """Share of the window's error budget left (``allowed`` failing share of ``total``): 1
    untouched, 0 spent, negative overspent; None without requests, or with no budget
    (``allowed`` 0) once a request failed."""
    if total == 0:
        return None
    budget = allowed * total
    if budget == 0:
        return 1.0 if failed == 0 else None
    return 1.0 - failed / budget


def burn_rate(allowed: float, total: int, failed: int) -> float | None:
    """Failing share over the window divided by the allowed share (1 = spends the budget in
    exactly the budget window)."""
    if total == 0 or allowed <= 0:
        return None
    return (failed / total) / allowed


@dataclass(frozen=True)
class AlertState:
    alert: BurnAlert
    firing: bool
    gated: bool  # fewer requests than the minimum in the long window
    long_burn: float | None
    short_burn: float | None
    long_requests: int


def evaluate(
    allowed: float, counts: Mapping[timedelta, Counts], min_requests: int
) -> list[AlertState]:
    """Each burn alert's state from the (total, failed) counts of its windows; a window without
    counts is unknown (no burn), and a long window under ``min_requests`` never fires."""
    states = []
    for alert in BURN_ALERTS:
        long_total, long_failed = counts.get(alert.long, (0, 0))
        short_total, short_failed = counts.get(alert.short, (0, 0))
        long_burn = burn_rate(allowed, long_total, long_failed)
        short_burn = burn_rate(allowed, short_total, short_failed)
        gated = long_total < min_requests
        firing = (
            not gated
            and long_burn is not None
            and short_burn is not None
            and long_burn >= alert.factor
            and short_burn >= alert.factor
        )
        states.append(AlertState(alert, firing, gated, long_burn, short_burn, long_total))
    return states


def alerts_json(states: list[AlertState], grain: timedelta | None = None) -> list[dict]:
    """The alert states as the API, the checks and ``/metrics`` report them; with ``grain``,
    the windows as that grain read them (:func:`at_grain`)."""

    def seconds(window: timedelta) -> int:
        return int((at_grain(window, grain) if grain else window).total_seconds())

    return [
        {
            "name": a.alert.name,
            "severity": a.alert.severity,
            "factor": a.alert.factor,
            "long": seconds(a.alert.long),
            "short": seconds(a.alert.short),
            "longBurn": a.long_burn,
            "shortBurn": a.short_burn,
            "longRequests": a.long_requests,
            "gated": a.gated,
            "firing": a.firing,
        }
        for a in states
    ]
