"""Billers' objectives as alerts: the rules (one alert per burning biller, its own severity, the
newest hour is the state) and, with a real Alertmanager, firing then resolved."""

from datetime import timedelta

import pytest
from dagster import instance_for_test

from metrics_pipeline.alerts.rules import Evaluation, alert_name, apply, check_alerts
from tests.alerts.helpers import Daemon, alert_env
from tests.alerts.servers import Alertmanager, Receiver
from tests.datapump.test_objectives import BURNING, HOUR, burning_warehouse, run_check, write_hours
from tests.support import register_billers

FAMILIES = {"error_rate_hourly": "datapump"}


def objectives(partition, burning=None, severities=None, passed=False):
    burning = burning or {}
    return Evaluation(
        "error_rate_hourly",
        "objectives",
        partition,
        passed,
        "ERROR" if "ERROR" in (severities or {}).values() else "WARN",
        f"{len(burning)} billers burning",
        {"burning_billers": burning, "biller_severity": severities or {}},
    )


def alerts_of(failing):
    return {a["labels"]["biller"]: a for a in check_alerts(failing, FAMILIES).values()}


def test_every_burning_biller_is_one_alert_with_its_own_severity():
    failing, _ = apply(
        {},
        {},
        objectives(
            "2026-12-03-07:00",
            {"7": "7 (Acme): error rate burns 20x (page)", "8": "8: p95 over (ticket)"},
            {"7": "ERROR", "8": "WARN"},
        ),
    )
    alerts = alerts_of(failing)
    assert set(alerts) == {"7", "8"}
    assert alerts["7"]["labels"]["alertname"] == "MetricsObjectives"
    assert alerts["7"]["labels"]["severity"] == "critical"
    assert alerts["8"]["labels"]["severity"] == "warning"  # the hour's ERROR is biller 7's
    assert alerts["7"]["labels"]["check_name"] == "objectives"
    summary = alerts["7"]["annotations"]["summary"]
    assert summary.startswith("objectives: biller 7 failing in 1 partition(s) (2026-12-03-07:00)")
    assert "7 (Acme): error rate burns 20x (page)" in summary


def test_the_newest_hour_is_the_state_and_older_hours_change_nothing():
    failing, latest = apply({}, {}, objectives("2026-12-03-07:00", {"7": "page"}, {"7": "ERROR"}))
    failing, latest = apply(
        failing, latest, objectives("2026-12-03-08:00", {"8": "x"}, {"8": "WARN"})
    )
    assert set(alerts_of(failing)) == {"8"}  # 7 burned at 07:00, not any more at 08:00
    # A backfill re-judging an older hour does not bring 7 back.
    failing, latest = apply(
        failing, latest, objectives("2026-12-03-06:00", {"7": "page"}, {"7": "ERROR"})
    )
    assert set(alerts_of(failing)) == {"8"}
    failing, latest = apply(failing, latest, objectives("2026-12-03-09:00", passed=True))
    assert failing == {} and latest == {"error_rate_hourly:objectives": "2026-12-03-09:00"}


def test_coverage_keeps_its_per_hour_state():
    # Not a present-state check: a newer hour does not clear an older hour's gap.
    cov = Evaluation(
        "error_rate_hourly", "coverage", "h1", False, "WARN", "", {"missing_billers": {"9": "busy"}}
    )
    failing, latest = apply({}, {}, cov)
    ok = Evaluation("error_rate_hourly", "coverage", "h2", True, "")
    failing, latest = apply(failing, latest, ok)
    assert list(failing["error_rate_hourly:coverage"]) == ["h1"] and latest == {}


def test_the_alert_name():
    assert alert_name("datapump", "objectives") == "MetricsObjectives"


@pytest.mark.alerting
def test_a_burning_biller_pages_alertmanager_then_resolves_when_an_hour_passes(tmp_path):
    receiver = Receiver().start()
    alertmanager = Alertmanager(tmp_path / "alertmanager", receiver.url).start()
    try:
        env = register_billers(tmp_path / "data", 4)
        burning_warehouse(env)
        labels = {"alertname": "MetricsObjectives", "biller": str(BURNING)}
        with instance_for_test() as instance:
            run_check(env, instance, HOUR)
            daemon = Daemon(
                {**alert_env(METRICS_ALERTMANAGER_URL=alertmanager.url), **env}, instance
            )
            daemon.tick()
            [alert] = receiver.wait_for("firing", **labels)
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["family"] == "datapump"
            assert alert["labels"]["check_name"] == "objectives"
            assert "biller 1000" in alert["annotations"]["summary"]
            assert "error rate burns the 30-day budget 20.0x" in alert["annotations"]["summary"]
            # The next hour is fine and its own hour row is read: the page stops.
            later = HOUR + timedelta(hours=1)
            write_hours(env["METRICS_WAREHOUSE_URL"], [(BURNING, later, 1000, 2, 0, 300.0, 1)])
            [evaluation] = run_check(env, instance, later)
            assert evaluation.passed
            daemon.tick()
            [resolved] = receiver.wait_for("resolved", **labels)
            assert resolved["labels"]["severity"] == "critical"
            assert not alertmanager.active(**labels)
    finally:
        alertmanager.stop()
        receiver.stop()
