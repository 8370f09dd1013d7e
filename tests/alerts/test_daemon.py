"""The acceptance path with the real dagster-daemon: a biller's shard busy during `materialize`
pages through a real Alertmanager, a restarted daemon sends no duplicate, and materializing the
window again once the flag clears sends the resolved notification."""

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from metrics_pipeline.cli import main
from tests.alerts.servers import Alertmanager, Receiver
from tests.datapump.test_coverage import set_processing
from tests.support import WINDOW_START, sqlite_environment

pytestmark = [pytest.mark.slow, pytest.mark.alerting]

COVERAGE = {"alertname": "MetricsCoverage", "check_name": "coverage", "biller": "9"}


def start_daemon(folder: Path, env: dict, name: str) -> subprocess.Popen:
    log = open(folder / f"{name}.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(folder / "ws.yaml")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )


def stop_daemon(daemon: subprocess.Popen) -> None:
    children = psutil.Process(daemon.pid).children(recursive=True)
    daemon.terminate()
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
    for child in children:  # its code server would outlive it
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)


def test_the_daemon_pages_once_and_resolves(tmp_path, monkeypatch):
    receiver = Receiver().start()
    alertmanager = Alertmanager(tmp_path / "am", receiver.url).start()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "ws.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: metrics_pipeline.definitions\n"
        f"      working_directory: {Path(__file__).resolve().parents[2]}\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("METRICS_")},
        **sqlite_environment(tmp_path, per_hour=1),
        "DAGSTER_HOME": str(home),
        "METRICS_ALERTMANAGER_URL": alertmanager.url,
        "METRICS_ALERTS_INTERVAL_S": "5",
        "METRICS_COVERAGE_ALERT_BILLERS": "0",
        "METRICS_BUSY_RETRIES": "0",
        # Only the window below matters here: no backlog backfill of the recent hours.
        "METRICS_BACKLOG_LOOKBACK_HOURS": "0",
    }
    window = ["--start", f"{WINDOW_START:%Y-%m-%d}", "--end", f"{WINDOW_START:%Y-%m-%d}T02:00"]
    set_processing(env, "beta", 9, True)
    # `materialize` runs in this process: its coverage checks read the setting from here.
    monkeypatch.setenv("METRICS_COVERAGE_ALERT_BILLERS", "0")
    try:
        assert main(["materialize", *window, "--billers", "7,9"], environ=env) == 1
        daemon = start_daemon(tmp_path, env, "daemon1")
        try:
            [alert] = receiver.wait_for("firing", budget_s=180, **COVERAGE)
        finally:
            stop_daemon(daemon)
        assert alert["labels"]["severity"] == "critical"
        assert "biller 9" in alert["annotations"]["summary"]

        daemon = start_daemon(tmp_path, env, "daemon2")
        try:
            # Several ticks of the restarted daemon (5 s apart) re-post the same alert.
            time.sleep(30)
            assert len(receiver.alerts("firing", **COVERAGE)) == 1
            assert alertmanager.active(**COVERAGE)
            set_processing(env, "beta", 9, False)
            assert main(["materialize", *window, "--billers", "7,9"], environ=env) == 0
            receiver.wait_for("resolved", budget_s=180, **COVERAGE)
        finally:
            stop_daemon(daemon)
        assert len(receiver.alerts("firing", **COVERAGE)) == 1
    finally:
        alertmanager.stop()
        receiver.stop()
