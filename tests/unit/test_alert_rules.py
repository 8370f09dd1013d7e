"""The mapping from check evaluations and runs to Alertmanager alerts, and what a tick posts."""

from datetime import datetime, timedelta

import pytest

from metrics_pipeline.alerts.delivery import DeliveryFailed, deliver
from metrics_pipeline.alerts.rules import (
    Evaluation,
    FinishedRun,
    alert_name,
    apply_evaluation,
    check_alerts,
    plan,
    run_alerts,
    webhook_message,
)
from metrics_pipeline.alerts.settings import AlertSettings

FAMILIES = {"error_rate_hourly": "datapump", "availability_minute": "availability"}
NOW = datetime(2026, 12, 2, 12)


def coverage(partition, passed=False, severity="ERROR", missing=None):
    return Evaluation(
        "error_rate_hourly",
        "coverage",
        partition,
        passed,
        severity,
        "1 of 3 billers not written",
        {"missing_billers": missing or {}},
    )


def test_one_alert_per_biller_with_the_worst_severity_of_its_hours():
    failing = {}
    failing = apply_evaluation(failing, coverage("h1", severity="WARN", missing={"9": "busy: x"}))
    failing = apply_evaluation(
        failing, coverage("h2", missing={"9": "busy: x", "7": "unreachable: y"})
    )
    alerts = {
        a["labels"]["biller"]: a for a in check_alerts(failing, FAMILIES, "http://ui/").values()
    }
    assert set(alerts) == {"7", "9"}
    assert alerts["9"]["labels"] == {
        "alertname": "MetricsCoverage",
        "severity": "critical",
        "family": "datapump",
        "asset_key": "error_rate_hourly",
        "check_name": "coverage",
        "biller": "9",
    }
    assert "biller 9" in alerts["9"]["annotations"]["summary"]
    assert "2 partition(s) (h1, h2)" in alerts["9"]["annotations"]["summary"]
    assert alerts["7"]["labels"]["severity"] == "critical"
    assert "unreachable: y" in alerts["7"]["annotations"]["summary"]
    assert alerts["9"]["annotations"]["dagster_url"] == (
        "http://ui/assets/error_rate_hourly?view=checks"
    )


def test_a_passing_evaluation_clears_its_partition_only():
    failing = apply_evaluation({}, coverage("h1", missing={"9": "busy: x"}))
    failing = apply_evaluation(failing, coverage("h2", missing={"9": "busy: x"}))
    failing = apply_evaluation(failing, coverage("h1", passed=True))
    assert list(failing["error_rate_hourly:coverage"]) == ["h2"]
    assert apply_evaluation(failing, coverage("h2", passed=True)) == {}


def test_scenarios_and_checks_without_entities():
    burn = Evaluation(
        "availability_minute", "burn_rate", "h1", False, "ERROR", None, {"firing": {"4": ["page"]}}
    )
    backlog = Evaluation("error_rate_hourly", "hourly_backlog", None, False, "WARN", "3 hours", {})
    failing = apply_evaluation(apply_evaluation({}, burn), backlog)
    alerts = sorted(
        check_alerts(failing, FAMILIES).values(), key=lambda a: a["labels"]["alertname"]
    )
    assert [a["labels"]["alertname"] for a in alerts] == ["AvailabilityBurnRate", "MetricsBacklog"]
    assert alerts[0]["labels"]["scenario"] == "4" and alerts[0]["labels"]["severity"] == "critical"
    assert "burn rate page" in alerts[0]["annotations"]["summary"]
    assert "biller" not in alerts[1]["labels"] and alerts[1]["labels"]["severity"] == "warning"
    assert alerts[1]["annotations"]["summary"] == "hourly_backlog failing: 3 hours"


@pytest.mark.parametrize(
    ("family", "check", "name"),
    [
        ("datapump", "coverage", "MetricsCoverage"),
        ("availability", "equals_minutes", "AvailabilityEqualsMinutes"),
    ],
)
def test_alert_names(family, check, name):
    assert alert_name(family, check) == name


def test_runs_fire_while_their_jobs_latest_finished_run_failed():
    runs = [
        FinishedRun("r1", "hourly_job", "FAILURE", "datapump", "shard unreachable"),
        FinishedRun("r2", "daily_job", "SUCCESS", "datapump"),
        FinishedRun("r3", "weekly_job", "CANCELED", "datapump"),
    ]
    alerts = {a["labels"]["job"]: a for a in run_alerts(runs, "http://ui").values()}
    assert set(alerts) == {"hourly_job", "weekly_job"}
    assert alerts["hourly_job"]["labels"]["alertname"] == "MetricsRunFailed"
    assert alerts["hourly_job"]["labels"]["severity"] == "critical"
    assert alerts["weekly_job"]["labels"]["severity"] == "warning"
    assert alerts["hourly_job"]["annotations"]["dagster_url"] == "http://ui/runs/r1"
    assert "shard unreachable" in alerts["hourly_job"]["annotations"]["summary"]


def test_plan_keeps_starts_and_resolves_what_stopped():
    a = {"labels": {"alertname": "A"}, "annotations": {}}
    firing, resolved = plan({}, {"fa": a}, NOW, timedelta(minutes=4))
    assert firing["fa"]["startsAt"] == "2026-12-02T12:00:00.000000Z"
    assert firing["fa"]["endsAt"] == "2026-12-02T12:04:00.000000Z"
    later = NOW + timedelta(minutes=1)
    again, none = plan(firing, {"fa": a}, later, timedelta(minutes=4))
    assert again["fa"]["startsAt"] == firing["fa"]["startsAt"] and not none
    gone, [res] = plan(again, {}, later, timedelta(minutes=4))
    assert not gone and res["endsAt"] == "2026-12-02T12:01:00.000000Z"
    message = webhook_message([res], later)
    assert message["status"] == "resolved" and message["alerts"][0]["status"] == "resolved"


def test_undelivered_resolutions_wait_for_the_next_tick():
    settings = AlertSettings(alertmanager_url="http://am", webhook_url="http://hook")
    a = {"labels": {"alertname": "A"}, "annotations": {}}
    sent = []

    def down(url, body, timeout):
        raise DeliveryFailed("down")

    def up(url, body, timeout):
        sent.append((url, body))

    state, failures = deliver({}, {"fa": a}, NOW, settings, up)
    assert not failures and len(sent) == 2
    state, failures = deliver(state, {}, NOW, settings, down)
    assert len(failures) == 2 and len(state["pending_alertmanager"]) == 1
    sent.clear()
    state, failures = deliver(state, {}, NOW, settings, up)
    assert not failures and not state["pending_alertmanager"] and not state["pending_webhook"]
    [(am_url, am_body), (_, hook)] = sent
    assert am_url == "http://am/api/v2/alerts" and am_body[0]["endsAt"] <= "2026-12-02T12:00:00.0Z"
    assert hook["alerts"][0]["status"] == "resolved"
    # Nothing changed: Alertmanager hears nothing to resolve, the webhook nothing at all.
    sent.clear()
    deliver(state, {}, NOW, settings, up)
    assert sent == []


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [
        ({}, 240),  # four one-minute ticks
        ({"METRICS_ALERTS_INTERVAL_S": "5"}, 240),  # fast ticks: still four minutes, as Prometheus
        ({"METRICS_ALERTS_INTERVAL_S": "300"}, 1200),  # four ticks
        ({"METRICS_ALERTS_INTERVAL_S": "1", "METRICS_ALERTS_EXPIRY_S": "4"}, 4),
    ],
)
def test_a_firing_alert_outlives_a_daemon_restart(environ, seconds):
    settings = AlertSettings.from_env({"METRICS_ALERTMANAGER_URL": "http://am", **environ})
    assert settings.expiry == timedelta(seconds=seconds)
    posted = []
    a = {"labels": {"alertname": "A"}, "annotations": {}}
    deliver({}, {"fa": a}, NOW, settings, post=lambda *args: posted.append(args))
    [(_, [sent], _)] = posted
    assert sent["endsAt"] == (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
