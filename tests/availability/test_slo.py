"""Error budget and burn-rate alerts: pure, parametrized."""

from datetime import date, timedelta

import pytest

from metrics_pipeline.availability import slo

H1, M5, H6, M30, D30 = (
    timedelta(hours=1),
    timedelta(minutes=5),
    timedelta(hours=6),
    timedelta(minutes=30),
    timedelta(days=30),
)


@pytest.mark.parametrize(
    "target, total, failed, remaining",
    [
        (99.9, 0, 0, None),
        (99.9, 100_000, 0, 1.0),
        (99.9, 100_000, 50, 0.5),
        (99.9, 100_000, 100, 0.0),
        (99.9, 100_000, 300, -2.0),
        (99.0, 1000, 5, 0.5),
        (100.0, 10, 0, 1.0),
        (100.0, 10, 1, None),
    ],
)
def test_budget_remaining(target, total, failed, remaining):
    got = slo.budget_remaining(target, total, failed)
    assert got == remaining if remaining is None else got == pytest.approx(remaining)


@pytest.mark.parametrize(
    "target, total, failed, burn",
    [
        (99.9, 1000, 1, 1.0),
        (99.9, 1000, 0, 0.0),
        (99.9, 0, 0, None),
        (99.0, 100, 50, 50.0),
        (100.0, 10, 1, None),
    ],
)
def test_burn_rate(target, total, failed, burn):
    got = slo.burn_rate(target, total, failed)
    assert got == burn if burn is None else got == pytest.approx(burn)


def _firing(counts, min_requests=100, target=99.9):
    return {s.alert.name: s.firing for s in slo.evaluate(target, counts, min_requests)}


@pytest.mark.parametrize(
    "counts, expected",
    [
        # 1.5 % errors over 1 h and 5 min: 15x > 14.4 -> page; 6 h quiet -> no ticket
        (
            {H1: (10_000, 150), M5: (800, 12), H6: (60_000, 150), M30: (5000, 20)},
            {"page": True, "ticket": False},
        ),
        # the long window burns but the short one recovered: no page (reset quickly)
        ({H1: (10_000, 150), M5: (800, 0)}, {"page": False, "ticket": False}),
        # slow burn: 0.7 % over 6 h and 30 min -> ticket only
        (
            {H1: (10_000, 70), M5: (800, 5), H6: (60_000, 420), M30: (5000, 35)},
            {"page": False, "ticket": True},
        ),
        # a quiet scenario: 99 requests, all failed, is gated
        (
            {H1: (99, 99), M5: (10, 10), H6: (99, 99), M30: (20, 20)},
            {"page": False, "ticket": False},
        ),
        # exactly the minimum passes the gate
        (
            {H1: (100, 100), M5: (10, 10), H6: (100, 100), M30: (20, 20)},
            {"page": True, "ticket": True},
        ),
        ({}, {"page": False, "ticket": False}),
    ],
)
def test_multi_window_burn_alerts(counts, expected):
    assert _firing(counts) == expected


def test_gate_is_reported():
    states = slo.evaluate(99.9, {H1: (5, 5), M5: (5, 5)}, 100)
    assert states[0].gated and not states[0].firing


def test_scenario_state_and_budget_series():
    state = slo.scenario_state(99.0, {D30: (1000, 5)}, 100)
    assert state["budgetRemaining"] == pytest.approx(0.5)
    assert state["availability30d"] == 99.5
    assert [a["name"] for a in state["alerts"]] == ["page", "ticket"]
    d0 = date(2025, 3, 1)
    daily = {d0 - timedelta(days=i): (100, 1) for i in range(40)}
    series = slo.budget_series(99.0, daily, [d0, d0 - timedelta(days=35)])
    assert series[0] == (d0, pytest.approx(0.0))  # 1 % errors spend the whole 1 % budget
    assert series[1][1] == pytest.approx(0.0)
    half = {d0: (100, 1)} | {d0 - timedelta(days=i): (100, 0) for i in range(1, 30)}
    assert slo.budget_series(99.0, half, [d0])[0][1] == pytest.approx(1 - 1 / 30)
