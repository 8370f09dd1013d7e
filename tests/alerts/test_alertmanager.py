"""alerts_sensor against a real Alertmanager (Debian's, started here on a free port) routing to a
webhook receiver of the test: notifications, resolutions, re-posting, restarts and outages."""

import time
from datetime import datetime

import pytest
from dagster import DagsterInstance, instance_for_test

from metrics_pipeline.cli import main
from tests.alerts.helpers import Daemon, alert_env, report_coverage
from tests.alerts.servers import Alertmanager, Link, Receiver
from tests.support import WINDOW_START, sqlite_environment

pytestmark = pytest.mark.alerting

HOUR = datetime(2025, 3, 1, 10)
BUSY = {"9": ("busy", "shard beta busy (Processing flag set)")}
COVERAGE = {"alertname": "MetricsCoverage", "check_name": "coverage", "biller": "9"}


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def alertmanager(tmp_path, receiver):
    am = Alertmanager(tmp_path / "alertmanager", receiver.url).start()
    yield am
    am.stop()


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def test_busy_biller_pages_then_resolves_after_it_is_materialized_again(
    tmp_path, receiver, alertmanager, monkeypatch
):
    from tests.datapump.test_coverage import set_processing

    env = sqlite_environment(tmp_path, per_hour=1)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **alert_env(
            METRICS_ALERTMANAGER_URL=alertmanager.url,
            METRICS_DAGSTER_UI_URL="http://dagster.example:3000",
        ),
        **env,
        "DAGSTER_HOME": str(home),
        "METRICS_BUSY_RETRIES": "0",
    }
    # As the acceptance's daemon runs: one biller not written in an hour pages.
    monkeypatch.setenv("METRICS_COVERAGE_ALERT_BILLERS", "0")
    window = ["--start", f"{WINDOW_START:%Y-%m-%d}", "--end", f"{WINDOW_START:%Y-%m-%d}T02:00"]
    set_processing(env, "beta", 9, True)
    assert main(["materialize", *window], environ=env) == 1
    instance = DagsterInstance.from_config(str(home))
    daemon = Daemon(env, instance)
    daemon.tick()
    [alert] = receiver.wait_for("firing", **COVERAGE)
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["family"] == "datapump"
    assert alert["labels"]["asset_key"] == "error_rate_hourly"
    assert "biller 9" in alert["annotations"]["summary"]
    assert "busy" in alert["annotations"]["summary"]
    assert alert["annotations"]["dagster_url"] == (
        "http://dagster.example:3000/assets/error_rate_hourly?view=checks"
    )
    # Only the busy biller is named: the others were written.
    assert not receiver.alerts("firing", biller="7") and not receiver.alerts("firing", biller="8")
    # Busy is routine: the runs succeeded, no MetricsRunFailed.
    assert not receiver.alerts("firing", alertname="MetricsRunFailed")
    assert not receiver.alerts("resolved", **COVERAGE)

    set_processing(env, "beta", 9, False)
    assert main(["materialize", *window], environ=env) == 0
    daemon.tick()
    [resolved] = receiver.wait_for("resolved", **COVERAGE)
    assert resolved["labels"]["severity"] == "critical"
    assert not alertmanager.active(**COVERAGE)


def test_reposting_keeps_an_alert_active_past_its_expiry(instance, receiver, alertmanager):
    # A tick every second, alerts posted to expire after 4 s; Alertmanager's resolve_timeout 2 s.
    env = alert_env(
        METRICS_ALERTMANAGER_URL=alertmanager.url,
        METRICS_ALERTS_INTERVAL_S="1",
        METRICS_ALERTS_EXPIRY_S="4",
    )
    report_coverage(instance, HOUR, BUSY)
    daemon = Daemon(env, instance)
    daemon.tick()
    receiver.wait_for("firing", **COVERAGE)
    stop = time.monotonic() + 10
    while time.monotonic() < stop:
        daemon.tick()
        time.sleep(1)
        assert alertmanager.active(**COVERAGE)
    assert not receiver.alerts("resolved", **COVERAGE)
    assert len(receiver.alerts("firing", **COVERAGE)) == 1
    # Without the sensor's re-posts it expires: Alertmanager resolves it by itself.
    receiver.wait_for("resolved", budget_s=30, **COVERAGE)


def test_a_restarted_daemon_sends_no_duplicate_notification(instance, receiver, alertmanager):
    env = alert_env(METRICS_ALERTMANAGER_URL=alertmanager.url)
    report_coverage(instance, HOUR, BUSY)
    first = Daemon(env, instance)
    first.tick()
    receiver.wait_for("firing", **COVERAGE)
    [sent] = alertmanager.active(**COVERAGE)
    # The daemon restarts: new definitions, the stored cursor.
    restarted = Daemon(env, instance, cursor=first.cursor)
    for _ in range(3):
        restarted.tick()
        time.sleep(1.5)  # more than group_interval: a change would be notified
    assert len(receiver.alerts("firing", **COVERAGE)) == 1
    [still] = alertmanager.active(**COVERAGE)
    assert still["startsAt"] == sent["startsAt"]  # the same alert, not a new one


def test_a_restarted_daemon_sends_no_duplicate_webhook(instance, receiver):
    env = alert_env(METRICS_ALERT_WEBHOOK_URL=receiver.url)
    report_coverage(instance, HOUR, BUSY)
    first = Daemon(env, instance)
    first.tick()
    first.tick()
    restarted = Daemon(env, instance, cursor=first.cursor)
    restarted.tick()
    assert len(receiver.messages) == 1
    [alert] = receiver.alerts("firing", **COVERAGE)
    assert alert["labels"]["severity"] == "critical"
    report_coverage(instance, HOUR, {})
    restarted.tick()
    restarted.tick()
    assert len(receiver.alerts("resolved", **COVERAGE)) == 1 and len(receiver.messages) == 2


def test_an_alertmanager_down_for_a_while_loses_nothing(instance, receiver, alertmanager):
    # The daemon reaches Alertmanager through a link the test cuts (a network outage).
    link = Link(alertmanager.port).start()
    env = alert_env(METRICS_ALERTMANAGER_URL=link.url)
    alertmanager.stop()  # not running at first: nothing was notified, nothing to remember
    report_coverage(instance, HOUR, BUSY)
    daemon = Daemon(env, instance)
    result = daemon.tick()
    assert "delivery failed" in result.skip_message  # the tick itself does not fail
    alertmanager.start()
    assert "delivered" in daemon.tick().skip_message
    receiver.wait_for("firing", **COVERAGE)

    # Unreachable while the check passes: the resolution waits in the cursor for it.
    link.cut()
    report_coverage(instance, HOUR, {})
    for _ in range(3):
        assert "delivery failed" in daemon.tick().skip_message
    assert not receiver.alerts("resolved", **COVERAGE)
    assert alertmanager.active(**COVERAGE)  # still firing there: it never heard otherwise
    link.start()
    assert "delivered" in daemon.tick().skip_message
    receiver.wait_for("resolved", **COVERAGE)
    link.cut()


def run_hourly(env, instance):
    from metrics_pipeline.definitions import build_definitions
    from tests.datapump.sensors.test_busy import hours_range

    job = build_definitions(env, resolve=True).resolve_job_def("hourly_job")
    return job.execute_in_process(instance=instance, tags=hours_range(), raise_on_error=False)


def test_a_failed_run_fires_until_a_newer_run_of_its_job_succeeds(tmp_path, instance, receiver):
    env = sqlite_environment(tmp_path, per_hour=1)
    # Shards where none exist: the run fails, every biller unreachable.
    broken = {**env, "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{tmp_path}/none/{{shard}}.db"}
    failed = run_hourly(broken, instance)
    assert not failed.success
    daemon = Daemon(
        alert_env(METRICS_ALERT_WEBHOOK_URL=receiver.url, METRICS_DAGSTER_UI_URL="http://ui"),
        instance,
    )
    daemon.tick()
    [alert] = receiver.alerts("firing", alertname="MetricsRunFailed")
    assert alert["labels"]["job"] == "hourly_job"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["family"] == "datapump"
    assert alert["annotations"]["dagster_url"] == f"http://ui/runs/{failed.run_id}"
    assert failed.run_id in alert["annotations"]["summary"]

    assert run_hourly(env, instance).success
    daemon.tick()
    [resolved] = receiver.alerts("resolved", alertname="MetricsRunFailed")
    assert resolved["labels"]["job"] == "hourly_job"
