"""The metrics-pipeline command: clear one-line errors, exit codes, failed partitions named."""

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from metrics_pipeline.cli import main
from metrics_pipeline.datapump.runs import plan_window
from metrics_pipeline.execution import UsageError
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY
from tests.support import sqlite_environment


@pytest.fixture
def env(tmp_path):
    return sqlite_environment(tmp_path, per_hour=2)


def run(args, env, capsys) -> tuple[int, str, str]:
    code = main(args, environ=env)
    out = capsys.readouterr()
    return code, out.out, out.err


WINDOW = ["--start", "2025-03-02T00:00Z", "--end", "2025-03-02T06:00:00+00:00"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start", "yesterday", "--end", "2025-03-02"], "--start: not an ISO 8601"),
        (["--start", "2025-03-02", "--end", "2025-13-01"], "--end: not an ISO 8601"),
        (["--start", "2025-03-03", "--end", "2025-03-02"], "must be before --end"),
        (["--start", "2024-01-01", "--end", "2024-01-02"], "on or after 2025-01-05"),
        (["--start", "2999-01-01", "--end", "2999-01-02"], "in the future"),
        ([*WINDOW, "--billers", "7,99"], "not enabled in the catalog: 99"),
        ([*WINDOW, "--billers", "7,x"], "--billers: expected comma-separated"),
        ([*WINDOW, "--billers", "10"], "not enabled in the catalog: 10"),
        (["--last-days", "0"], "--last-days must be at least 1"),
        (["--start", "2025-03-02"], "give --start and --end"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, env, capsys):
    code, _, err = run(["materialize", *args], env, capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("which", ["METRICS_CATALOG_URL", "METRICS_WAREHOUSE_URL"])
def test_unreachable_database_is_one_line_and_exit_2(which, env, capsys):
    env = {**env, which: "postgresql://nobody@127.0.0.1:1/nothing"}
    code, _, err = run(["materialize", *WINDOW], env, capsys)
    assert code == 2
    assert err.startswith("metrics-pipeline: error: ") and "unreachable" in err
    assert err.count("\n") == 1 and "nobody" in err


def test_malformed_url_is_one_line_and_exit_2(env, capsys):
    code, _, err = run(
        ["materialize", *WINDOW], {**env, "METRICS_CATALOG_URL": "not a url"}, capsys
    )
    assert code == 2 and "not a SQLAlchemy URL" in err and err.count("\n") == 1


def test_unreachable_shard_fails_only_its_billers_and_names_them(env, capsys, tmp_path):
    (tmp_path / "beta.db").unlink()  # biller 9's shard is gone
    code, out, err = run(["materialize", *WINDOW], env, capsys)
    assert code == 1
    assert "biller 9" in err and "shard beta unreachable" in err
    assert "biller 7" not in err and "biller 8" not in err
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    with engine.connect() as conn:
        billers = dict(
            conn.execute(
                text(
                    'SELECT "BillerId", COUNT(*) FROM "DataPumpErrorAggregation" '
                    'WHERE "TimeStampTypeId" = 1 GROUP BY "BillerId"'
                )
            ).all()
        )
    engine.dispose()
    assert billers == {7: 168, 8: 168}  # the whole week of hours, and nothing for biller 9
    assert "FAILED" in out


def test_selected_billers_only(env, capsys):
    code, out, _ = run(["materialize", *WINDOW, "--billers", "7,9"], env, capsys)
    assert code == 0
    # the lean-events setting of the throw-away instance does not leak into the process
    assert "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS" not in os.environ
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    with engine.connect() as conn:
        billers = {
            r[0]
            for r in conn.execute(
                text('SELECT DISTINCT "BillerId" FROM "DataPumpResponseTimeAggregation"')
            )
        }
    engine.dispose()
    assert billers == {7, 9}


def test_plan_is_whole_weeks_cut_at_the_running_hour_without_dagster():
    now = datetime(2025, 3, 5, 10, 20)
    earliest = datetime(2025, 1, 5)
    plan = plan_window(datetime(2025, 3, 1, 5), datetime(2025, 3, 4), now, earliest, chunk_days=3)
    assert plan.first == datetime(2025, 2, 23) and plan.stop == datetime(2025, 3, 5, 11)
    hourly = [r for r in plan.runs if r.level == HOURLY]
    assert [(r.first, r.last) for r in hourly][0] == (
        datetime(2025, 2, 23),
        datetime(2025, 2, 25, 23),
    )
    assert hourly[-1].last == datetime(2025, 3, 5, 10)
    assert plan.partitions(HOURLY) == 10 * 24 + 11
    assert plan.partitions(DAILY) == 11 and plan.partitions(WEEKLY) == 2
    # One run per level above hourly, whatever the number of billers.
    assert [r.level for r in plan.runs].count(DAILY) == 1
    with pytest.raises(UsageError, match="on or after 2025-03-01"):
        plan_window(datetime(2025, 2, 1), datetime(2025, 2, 2), now, datetime(2025, 3, 1))
    # A window starting at the first partition is not widened before it.
    late = plan_window(datetime(2025, 3, 1), datetime(2025, 3, 2), now, datetime(2025, 3, 1))
    assert late.first == datetime(2025, 3, 1) and late.runs[0].first == datetime(2025, 3, 1)


def test_partitions_start_is_configurable_and_checked(env, capsys):
    code, _, err = run(
        ["materialize", *WINDOW], {**env, "METRICS_PARTITIONS_START": "March"}, capsys
    )
    assert code == 2 and "METRICS_PARTITIONS_START must be a date" in err and err.count("\n") == 1
    code, _, err = run(
        ["materialize", *WINDOW], {**env, "METRICS_PARTITIONS_START": "2025-03-11"}, capsys
    )
    assert code == 2 and "on or after 2025-03-09" in err  # the setting's Sunday


def test_console_script_is_quiet_without_a_terminal(env, tmp_path):
    """Run as users do: the installed script, no TTY; only the summary is printed."""
    script = Path(sys.executable).parent / "metrics-pipeline"
    result = subprocess.run(
        [str(script), "materialize", *WINDOW, "--billers", "8"],
        env={**os.environ, **env, "DAGSTER_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress, no warnings
    assert "hourly" in result.stdout and "Biller" in result.stdout
    assert len(result.stdout.splitlines()) < 25  # one screen


def test_last_days_starts_at_midnight_utc_and_ends_after_the_running_hour():
    from datetime import timedelta

    from metrics_pipeline.cli import build_parser, materialize_bounds
    from metrics_pipeline.clock import utc_now

    before = utc_now()
    start, end = materialize_bounds(build_parser().parse_args(["materialize", "--last-days", "3"]))
    after = utc_now()
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    # The window ends after the running hour (midnight when run at 23:xx) and starts 3 days earlier.
    ends = {
        t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) for t in (before, after)
    }
    assert start.date() in {(e - timedelta(days=3)).date() for e in ends}
    assert end.minute == 0 and before < end <= after.replace(
        minute=0, second=0, microsecond=0
    ) + timedelta(hours=1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--error-rate", "1.5"], "biller 7: ErrorRateObjective must be a share strictly between"),
        (["--p95-ms", "-3"], "biller 7: P95ResponseTimeObjectiveMs must be above 0 ms"),
        ([], "biller 7: no objective given"),
    ],
)
def test_an_impossible_objective_is_one_line_and_nothing_is_written(args, message, env, capsys):
    code, _, err = run(["objectives", "set", "7", *args], env, capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    code, out, _ = run(["objectives", "list"], env, capsys)
    assert code == 0 and out == ""


def test_objectives_are_set_and_listed_with_their_state(env, capsys):
    code, out, _ = run(["objectives", "set", "7", "8", "--error-rate", "0.01"], env, capsys)
    assert code == 0 and "2 biller(s) set" in out
    code, out, _ = run(["objectives", "list", "7"], env, capsys)
    assert code == 0
    assert out.startswith("7: {'errorRate': 0.01, 'timeoutRate': None, 'p95Ms': None} unknown:")
    assert "8:" not in out
