"""Service-level objectives per scenario: the availability family's targets are percentages;
the budget and burn-rate maths is :mod:`metrics_pipeline.slo`, shared with the DataPump family."""

from collections.abc import Mapping
from datetime import timedelta

from metrics_pipeline import slo
from metrics_pipeline.slo import BUDGET_WINDOW, AlertState, Counts


def allowed_error_rate(target_percent: float) -> float:
    """1 - target: the share of requests that may fail (0.001 for a 99.9 % target)."""
    return max(0.0, 1.0 - float(target_percent) / 100.0)


def budget_remaining(target_percent: float, total: int, failed: int) -> float | None:
    """:func:`metrics_pipeline.slo.budget_remaining` for a target in percent."""
    return slo.budget_remaining(allowed_error_rate(target_percent), total, failed)


def burn_rate(target_percent: float, total: int, failed: int) -> float | None:
    """:func:`metrics_pipeline.slo.burn_rate` for a target in percent."""
    return slo.burn_rate(allowed_error_rate(target_percent), total, failed)


def evaluate(
    target_percent: float, counts: Mapping[timedelta, Counts], min_requests: int
) -> list[AlertState]:
    """:func:`metrics_pipeline.slo.evaluate` for a target in percent."""
    return slo.evaluate(allowed_error_rate(target_percent), counts, min_requests)


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
        "alerts": slo.alerts_json(alerts),
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
