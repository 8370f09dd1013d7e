"""Error paths a user can trust: one line on stderr and the documented exit code, no traceback
(unless --debug), and no run left STARTED by a process that died."""

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    build_sensor_context,
)
from sqlalchemy import create_engine, text

from metrics_pipeline.cli import main
from metrics_pipeline.coverage import DATAPUMP
from metrics_pipeline.datapump.runs import plan_window
from metrics_pipeline.definitions import build_definitions, build_resources
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY
from tests.support import PG_ADMIN_URL, sqlite_environment

WINDOW = ["--start", "2025-03-02T00:00Z", "--end", "2025-03-02T06:00Z"]
SCRIPT = Path(sys.executable).parent / "metrics-pipeline"


@pytest.fixture
def env(tmp_path):
    return sqlite_environment(tmp_path, per_hour=2)


def run(args, env, capsys) -> tuple[int, str, str]:
    try:
        code = main(args, environ=env)
    except SystemExit as exc:  # argparse's errors exit by themselves (through our one line)
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("metrics-pipeline: ") and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["materialize", "--last-days", "99999999"], "reaches before the first partition"),
        (["materialize", "--start", "9999-12-30", "--end", "9999-12-31T23:00"], "in the future"),
        (
            ["materialize", "--start", "0001-01-01T00:00+05:00", "--end", "2025-03-02"],
            "out of the range",
        ),
        (["materialize", *WINDOW, "--chunk-days", "0"], "--chunk-days must be at least 1"),
        (["demo-data", "--scale", "-1"], "--scale must be between 0 and 1000"),
        (["api", "--port", "70000"], "a port is 1 to 65535"),
        (["api", "--port", "http"], "not a port number"),
        (["materialize", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, env, capsys):
    code, _, err = run(args, env, capsys)
    assert code == 2 and one_line(err) and message in err, err


def test_an_end_far_in_the_future_is_cut_at_the_running_hour():
    now = datetime(2025, 3, 5, 10, 20)
    plan = plan_window(datetime(2025, 3, 1), datetime(9999, 12, 31, 23), now, datetime(2025, 1, 5))
    assert plan.stop == datetime(2025, 3, 5, 11)


def test_an_uncreatable_sqlite_warehouse_is_one_line(env, capsys):
    code, _, err = run(
        ["materialize", *WINDOW],
        {**env, "METRICS_WAREHOUSE_URL": "sqlite:////proc/nope/wh.db"},
        capsys,
    )
    assert code == 2 and one_line(err) and "cannot create the folder /proc/nope" in err, err


def test_an_unknown_shard_driver_fails_before_any_run(env, capsys):
    code, _, err = run(
        ["materialize", *WINDOW], {**env, "METRICS_SHARD_URL_TEMPLATE": "foo://{shard}"}, capsys
    )
    assert code == 2 and one_line(err) and "unknown database driver 'foo'" in err, err


@pytest.mark.parametrize("case", ["file", "uncreatable", "broken yaml", "unreachable storage"])
def test_a_bad_dagster_home_is_one_line(case, env, tmp_path, capsys):
    home = tmp_path / "home"
    if case == "file":
        home.write_text("not a folder")
    elif case == "uncreatable":
        home = Path("/proc/nope/home")
    elif case == "broken yaml":
        home.mkdir()
        (home / "dagster.yaml").write_text("run_storage: [unclosed\n")
    else:
        home.mkdir()
        (home / "dagster.yaml").write_text(
            "storage:\n  postgres:\n    postgres_url: postgresql://nobody@127.0.0.1:1/dagster\n"
        )
    code, _, err = run(["materialize", *WINDOW], {**env, "DAGSTER_HOME": str(home)}, capsys)
    assert code == 2 and one_line(err) and f"DAGSTER_HOME={home}" in err, err


def test_debug_shows_the_traceback(env, capsys):
    with pytest.raises(Exception, match="unknown database driver"):
        main(
            ["--debug", "materialize", *WINDOW],
            environ={**env, "METRICS_SHARD_URL_TEMPLATE": "foo://{shard}"},
        )


def test_the_console_script_prints_one_line_for_a_broken_setup(env, tmp_path):
    result = subprocess.run(
        [str(SCRIPT), "materialize", *WINDOW],
        env={**os.environ, **env, "METRICS_SHARD_URL_TEMPLATE": "foo://{shard}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and one_line(result.stderr), result.stderr


def test_a_port_in_use_is_one_line(env, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(["api", "--port", str(port)], env, capsys)
    assert code == 2 and one_line(err) and f"cannot listen on 127.0.0.1:{port}" in err, err


@pytest.mark.parametrize("missing", ["table", "column"])
def test_a_misconfigured_shard_is_named_not_retried_and_an_error(missing, env, tmp_path, capsys):
    engine = create_engine(env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", "beta"))
    with engine.begin() as conn:
        if missing == "table":
            conn.execute(text('DROP TABLE "BillerDataPump"'))
        else:
            conn.execute(text('ALTER TABLE "DataPumpDetail" DROP COLUMN "StatusCode"'))
    engine.dispose()
    code, _, err = run(["materialize", *WINDOW], env, capsys)
    assert code == 1
    assert "biller 9" in err and "misconfigured" in err
    assert ("BillerDataPump" if missing == "table" else "StatusCode") in err
    wh = WarehouseResource(url=env["METRICS_WAREHOUSE_URL"])
    hour = datetime(2025, 3, 2)
    states = {
        e.state for e in wh.read_ledger(DATAPUMP, HOURLY, hour, hour + HOURLY.length)[hour].values()
    }
    assert states == {"written", "misconfigured"}
    # Not retried by the sensor, and no backfill for it: a person must fix the names.
    defs = build_definitions(env, resolve=True)
    with DagsterInstance.ephemeral() as instance:
        with build_sensor_context(
            instance=instance, resources=build_resources(env, resolve=True)
        ) as ctx:
            result = defs.resolve_sensor_def("shard_retry_sensor")(ctx)
    assert not result.run_requests


def test_a_coverage_check_with_a_misconfigured_shard_is_an_error(env, capsys):
    engine = create_engine(env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", "beta"))
    with engine.begin() as conn:
        conn.execute(text('DROP TABLE "BillerDataPump"'))
    engine.dispose()
    job = build_definitions(env, resolve=True).resolve_job_def("hourly_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key="2025-03-02-01:00", raise_on_error=False
        )
        # Logged after the materialization it is tied to: in the instance's log of the run.
        [check] = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(
                result.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
            )
        ]
    assert not check.passed and check.severity.value == "ERROR"
    assert "misconfigured" in check.metadata["missing_billers"].value["9"]


@pytest.mark.postgres
def test_a_warehouse_lost_mid_run_is_one_line_and_exit_2(pg_databases, tmp_path):
    env = sqlite_environment(tmp_path, per_hour=40)
    url = pg_databases.create()
    db = url.rsplit("/", 1)[1]
    env["METRICS_WAREHOUSE_URL"] = url
    proc = subprocess.Popen(
        [
            str(SCRIPT),
            "materialize",
            "--start",
            "2025-02-23",
            "--end",
            "2025-03-09",
            "--chunk-days",
            "1",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    engine = create_engine(url)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until the run is writing
        try:
            with engine.connect() as conn:
                if conn.execute(text('SELECT COUNT(*) FROM "CoverageLedger"')).scalar():
                    break
        except Exception:
            pass
        time.sleep(0.2)
    engine.dispose()
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false'))
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
            {"d": db},
        )
    out, err = proc.communicate(timeout=300)
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true'))
    admin.dispose()
    assert proc.returncode == 2, (out, err)
    assert one_line(err) and "warehouse unreachable" in err, err


def test_a_run_whose_process_was_killed_is_marked_failed(env, tmp_path):
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [
            str(SCRIPT),
            "materialize",
            "--start",
            "2025-02-23",
            "--end",
            "2025-03-09",
            "--chunk-days",
            "1",
        ],
        env={**os.environ, **env, "DAGSTER_HOME": str(home), "METRICS_BUSY_RETRY_DELAY_S": "30"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Hold a biller busy so that the run waits inside its step, STARTED, when it is killed.
    engine = create_engine(env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", "alpha"))
    with engine.begin() as conn:
        conn.execute(text('UPDATE "BillerDataPump" SET "Processing" = 1 WHERE "BillerId" = 7'))
    engine.dispose()
    deadline = time.monotonic() + 240
    started = []
    while time.monotonic() < deadline and not (home / "history" / "runs.db").exists():
        time.sleep(0.5)
    time.sleep(3)  # let the command finish creating the instance's storage
    while time.monotonic() < deadline and not started:
        time.sleep(0.5)
        if (home / "dagster.yaml").exists():
            with DagsterInstance.from_config(str(home)) as inst:
                started = inst.get_run_records(
                    filters=RunsFilter(statuses=[DagsterRunStatus.STARTED])
                )
    assert started, "no run started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    run_id = started[0].dagster_run.run_id
    with DagsterInstance.from_config(str(home)) as inst:
        assert inst.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
        # What the daemon's dead_runs_sensor does every minute (and every command at start).
        sensor = build_definitions(env, resolve=True).resolve_sensor_def("dead_runs_sensor")
        with build_sensor_context(instance=inst) as ctx:
            sensor(ctx)
        assert inst.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
