"""Service-level objectives per scenario, pure: error budget over a rolling 30 days from summed
counts, and multi-window burn-rate alerts (Google SRE workbook, chapter 5) with a minimum-request
gate so that a quiet scenario does not page."""

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


def allowed_error_rate(target_percent: float) -> float:
    """1 - target: the share of requests that may fail (0.001 for a 99.9 % target)."""
    return max(0.0, 1.0 - float(target_percent) / 100.0)


def budget_remaining(target_percent: float, total: int, failed: int) -> float | None:
    """Share of the window's error budget left: 1 untouched, 0 spent, negative overspent;
    None without requests, or with a 100 % target (no budget) once a request failed."""
    if total == 0:
        return None
    allowed = allowed_error_rate(target_percent) * total
    if allowed == 0:
        return 1.0 if failed == 0 else None
    return 1.0 - failed / allowed


def burn_rate(target_percent: float, total: int, failed: int) -> float | None:
    """Error rate over the window divided by the allowed error rate (1 = spends the budget in
    exactly the budget window)."""
    allowed = allowed_error_rate(target_percent)
    if total == 0 or allowed == 0:
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
    target_percent: float, counts: Mapping[timedelta, Counts], min_requests: int
) -> list[AlertState]:
    """Each burn alert's state from the (total, failed) counts of its windows."""
    states = []
    for alert in BURN_ALERTS:
        long_total, long_failed = counts.get(alert.long, (0, 0))
        short_total, short_failed = counts.get(alert.short, (0, 0))
        long_burn = burn_rate(target_percent, long_total, long_failed)
        short_burn = burn_rate(target_percent, short_total, short_failed)
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


def scenario_state(
    target_percent: float, counts: Mapping[timedelta, Counts], min_requests: int
) -> dict:
    """What the API and the checks report for one scenario."""
    total, failed = counts.get(BUDGET_WINDOW, (0, 0))
    alerts = evaluate(target_percent, counts, min_requests)
    return {
        "target": float(target_percent),
        "requests30d": total,
        "failed30d": failed,
        "availability30d": None if not total else round(100.0 * (total - failed) / total, 4),
        "budgetRemaining": budget_remaining(target_percent, total, failed),
        "alerts": [
            {
                "name": a.alert.name,
                "severity": a.alert.severity,
                "factor": a.alert.factor,
                "long": int(a.alert.long.total_seconds()),
                "short": int(a.alert.short.total_seconds()),
                "longBurn": a.long_burn,
                "shortBurn": a.short_burn,
                "longRequests": a.long_requests,
                "gated": a.gated,
                "firing": a.firing,
            }
            for a in alerts
        ],
    }


def budget_series(
    target_percent: float, daily: Mapping, days: list
) -> list[tuple[object, float | None]]:
    """Budget remaining at the end of each of ``days``, over the 30 days ending there, from
    {day: (total, failed)} daily counts (rolling sums of counts, never of percentages)."""
    out = []
    for day in days:
        total = failed = 0
        for i in range(BUDGET_WINDOW.days):
            t, f = daily.get(day - timedelta(days=i), (0, 0))
            total, failed = total + t, failed + f
        out.append((day, budget_remaining(target_percent, total, failed)))
    return out
