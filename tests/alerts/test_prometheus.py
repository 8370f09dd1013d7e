"""Prometheus (Debian's, started here) scrapes `metrics-pipeline api`'s /metrics and the rules
of deploy/prometheus fire; promtool checks and unit-tests those rules."""

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from metrics_pipeline.cli import main
from tests.alerts.servers import PROMTOOL, Prometheus, need, wait_until
from tests.api.test_server import env_for, run_api, wait_healthy
from tests.collected.processes import free_port
from tests.datapump.test_coverage import set_processing
from tests.support import WINDOW_START, sqlite_environment

pytestmark = pytest.mark.alerting

RULES = Path(__file__).parents[2] / "deploy" / "prometheus"


@pytest.mark.parametrize(
    "command", [["check", "rules", "rules.yml"], ["test", "rules", "rules.test.yml"]]
)
def test_promtool_accepts_the_rules(command):
    done = subprocess.run(
        [need(PROMTOOL), *command], cwd=RULES, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_a_busy_biller_and_its_rule_fires(tmp_path):
    env = {**sqlite_environment(tmp_path, per_hour=1), "METRICS_BUSY_RETRIES": "0"}
    set_processing(env, "beta", 9, True)
    window = ["--start", f"{WINDOW_START:%Y-%m-%d}", "--end", f"{WINDOW_START:%Y-%m-%d}T02:00"]
    assert main(["materialize", *window, "--billers", "7,9"], environ=env) == 1
    # The rules as shipped, with their `for:` waits cut to nothing.
    rules = tmp_path / "rules.yml"
    rules.write_text(re.sub(r"for: \S+", "for: 0s", (RULES / "rules.yml").read_text()))
    port = free_port()
    api = run_api(
        {**env_for(SimpleNamespace(url=env["METRICS_WAREHOUSE_URL"])), **env}, "127.0.0.1", port
    )
    prometheus = None
    try:
        wait_healthy(port, api)
        prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{port}", rules).start()
        [busy] = wait_until(
            "busy hours scraped",
            lambda: prometheus.query('metrics_pipeline_uncovered_hours{state="busy"} > 0'),
        )
        assert busy["metric"]["family"] == "datapump" and float(busy["value"][1]) == 168
        [alert] = wait_until(
            "MetricsUncoveredHours firing", lambda: prometheus.firing("MetricsUncoveredHours")
        )
        assert alert["labels"]["state"] == "busy" and alert["labels"]["severity"] == "warning"
        assert not prometheus.firing("MetricsApiDown")
    finally:
        if prometheus:
            prometheus.stop()
        api.terminate()
        api.wait(timeout=30)
