"""The platform's health figures from ledger rows (what GET /metrics exposes)."""

import math
from datetime import datetime, timedelta

from metrics_pipeline.health import burn_windows, family_health, window_label

H = timedelta(hours=1)
T0 = datetime(2026, 12, 2, 0)
NOW = T0 + 10 * H + timedelta(minutes=30)
WINDOW = (T0, T0 + 8 * H)


def test_freshness_is_the_end_of_the_newest_covered_hour():
    written = [T0 + i * H for i in range(10)]
    # Hour 9 has a busy biller, hour 8 is complete.
    health = family_health("datapump", NOW, [(T0 + 9 * H, "busy")], written, T0 + 9 * H, WINDOW)
    assert health.freshness_s == (NOW - (T0 + 9 * H)).total_seconds()
    assert health.uncovered_hours["busy"] == 1 and health.uncovered_hours["failed"] == 0
    assert set(health.uncovered_hours) == {
        "busy",
        "unreachable",
        "misconfigured",
        "failed",
        "stale",
    }
    assert health.backlog_hours == 0


def test_hours_without_rows_or_with_failures_are_backlog():
    written = [T0 + i * H for i in (0, 1, 2, 5, 6, 7)]
    states = [(T0 + 1 * H, "unreachable"), (T0 + 1 * H, "busy"), (T0 + 2 * H, "stale")]
    health = family_health("datapump", NOW, states, written, T0 + 7 * H, WINDOW)
    # Missing: 3, 4 (no rows) and 1 (unreachable); a stale hour still holds its figures.
    assert health.backlog_hours == 3
    assert health.uncovered_hours == {
        "busy": 1,
        "failed": 0,
        "misconfigured": 0,
        "stale": 1,
        "unreachable": 1,
    }


def test_no_covered_hour_is_infinitely_stale():
    health = family_health("datapump", NOW, [(T0, "busy")], [T0], T0, WINDOW)
    assert math.isinf(health.freshness_s) and health.backlog_hours == 8


def test_burn_windows_name_each_window_once():
    alerts = [
        {"long": 3600, "short": 300, "longBurn": 20.0, "shortBurn": 15.0},
        {"long": 21600, "short": 1800, "longBurn": None, "shortBurn": 2.5},
    ]
    assert burn_windows(alerts) == {"1h": 20.0, "5m": 15.0, "30m": 2.5}
    assert window_label(86400 * 30) == "30d"
