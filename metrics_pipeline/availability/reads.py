"""What the portal reads: a scenario's series, the time x scenarios pivot, and SLO state with
the budget over time. Plain functions over a Store; the API router is a thin layer on them."""

from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal

from metrics_pipeline.availability import slo, sql
from metrics_pipeline.availability.pipeline import slo_states
from metrics_pipeline.availability.writer import Store
from metrics_pipeline.clock import as_naive_utc

SERIES_FIELDS = [c for c in sql.PUBLISHED_VALUES if c != "ScenarioName"]


def _json(value):
    if isinstance(value, Decimal):
        return float(value)
    return value


def scenarios(store: Store) -> list[dict]:
    return [
        {
            "scenarioId": r["ScenarioId"],
            "scenarioName": r["ScenarioName"],
            "availabilityTarget": float(r["AvailabilityTarget"]),
        }
        for r in sorted(store.scenarios().values(), key=lambda r: r["ScenarioId"])
    ]


def series(
    store: Store, scenario_id: str, level: int, start: datetime, end: datetime
) -> list[dict]:
    """Published rows of one scenario, oldest first."""
    rows = store.read(sql.published_series(store.tables, level, start, end, [scenario_id]))
    return [
        {
            "startTime": as_naive_utc(r["StartTime"]).isoformat(),
            **{k[0].lower() + k[1:]: _json(r[k]) for k in SERIES_FIELDS},
        }
        for r in rows
    ]


def pivot(
    store: Store, level: int, start: datetime, end: datetime, scenario_ids: list[str] | None
) -> dict:
    """Availability as a table: one row per time, one column per scenario (None where a
    scenario had no requests), as the portal's UI consumes it."""
    rows = store.read(sql.published_series(store.tables, level, start, end, scenario_ids))
    names: dict[str, str] = {}
    cells: dict[str, dict[str, float | None]] = defaultdict(dict)
    for r in rows:
        names[r["ScenarioId"]] = r["ScenarioName"]
        cells[as_naive_utc(r["StartTime"]).isoformat()][r["ScenarioId"]] = _json(r["Availability"])
    columns = sorted(names)
    times = sorted(cells)
    return {
        "timeStampTypeId": level,
        "scenarios": [{"scenarioId": s, "scenarioName": names[s]} for s in columns],
        "times": times,
        "availability": [[cells[t].get(s) for s in columns] for t in times],
    }


def slo_report(store: Store, at: datetime, min_requests: int, budget_days: int = 30) -> dict:
    """SLO state of every scenario at ``at``, and its budget remaining at the end of each of
    the last ``budget_days`` days (rolling 30 days of daily counts)."""
    states = slo_states(store, at, min_requests)
    last = at.date()
    days = [last - timedelta(days=i) for i in range(budget_days - 1, -1, -1)]
    daily = _daily_counts(
        store, datetime.combine(days[0], datetime.min.time()) - slo.BUDGET_WINDOW, at
    )
    out = []
    for sid, state in states.items():
        budget = slo.budget_series(state["target"], daily.get(sid, {}), days)
        out.append(
            {
                "scenarioId": sid,
                **state,
                "budget": [{"day": d.isoformat(), "remaining": r} for d, r in budget],
            }
        )
    return {"at": at.isoformat(), "minRequests": min_requests, "scenarios": out}


def _daily_counts(store: Store, start: datetime, end: datetime) -> dict[str, dict[date, tuple]]:
    """{scenario: {day: (total, failed)}} from the daily rows (the running day included)."""
    query = sql.daily_scenario_counts(store.tables, start, end)
    out: dict[str, dict[date, tuple]] = defaultdict(dict)
    for r in store.read(query):
        out[r["ScenarioId"]][as_naive_utc(r["StartTime"]).date()] = (
            int(r["TotalRequests"] or 0),
            int(r["FailedRequests"] or 0),
        )
    return out
