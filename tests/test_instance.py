"""The Dagster instance in DAGSTER_HOME: concurrent first use by several commands, and the runs
that a dead process left NOT_STARTED."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from metrics_pipeline.execution import open_instance
from metrics_pipeline.tags import HOST_TAG, PID_TAG
from tests.support import sqlite_environment

SCRIPT = Path(sys.executable).parent / "metrics-pipeline"

#: One hour of one biller; with the partitions starting that day the week is cut to one day.
ONE_HOUR = ["--start", "2025-03-08T00:00Z", "--end", "2025-03-08T01:00Z", "--billers", "8"]


def test_three_commands_at_once_on_a_new_dagster_home_all_succeed(tmp_path):
    """Each command creates and migrates the instance's SQLite storages if they are missing;
    unserialized, one of three loses the race (``table runs already exists``) or leaves two
    alembic heads that break every later command."""
    env = {
        **os.environ,
        **sqlite_environment(tmp_path, per_hour=1),
        "METRICS_PARTITIONS_START": "2025-03-08",
        "DAGSTER_HOME": str(tmp_path / "home"),  # does not exist yet
    }
    procs = [
        subprocess.Popen(
            [str(SCRIPT), "materialize", *ONE_HOUR],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [code for code, _ in results] == [0, 0, 0], results
    # The instance stays usable: a later command and a fresh reader both open it.
    later = subprocess.run(
        [str(SCRIPT), "materialize", *ONE_HOUR],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert later.returncode == 0, later.stderr
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert len(runs) == 4 * 3  # hourly, daily and weekly run per command
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}


def test_a_run_left_not_started_by_a_dead_process_is_marked_failed(tmp_path):
    """A process killed after Dagster created its run and before the run started leaves it
    NOT_STARTED; the next command on the host marks it failed, as it does STARTED ones."""
    home = tmp_path / "home"
    environ = {"DAGSTER_HOME": str(home)}
    open_instance(environ).dispose()  # creates the instance
    # A real process creates a run with its host and PID tags, then dies without starting it.
    dies = textwrap.dedent(
        f"""
        import os
        from dagster import DagsterInstance, job, op
        from metrics_pipeline.execution import process_tags

        @op
        def nothing():
            pass

        @job
        def never_started():
            nothing()

        instance = DagsterInstance.from_config({str(home)!r})
        run = instance.create_run_for_job(never_started, tags=process_tags())
        print(run.run_id, flush=True)
        os._exit(9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", dies], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    run_id = proc.stdout.split()[0]
    with DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run.status == DagsterRunStatus.NOT_STARTED
        assert run.tags[PID_TAG] != str(os.getpid()) and HOST_TAG in run.tags
    # A live process's NOT_STARTED run is left alone.
    with DagsterInstance.from_config(str(home)) as instance:
        mine = instance.create_run_for_job(
            _nothing_job(), tags={HOST_TAG: run.tags[HOST_TAG], PID_TAG: str(os.getppid())}
        )
    instance = open_instance(environ)  # what every command does first
    try:
        failed = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
        assert [r.run_id for r in failed] == [run_id]
        assert instance.get_run_by_id(mine.run_id).status == DagsterRunStatus.NOT_STARTED
        [event] = [
            e
            for e in instance.all_logs(run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"
        ]
        assert "is gone" in event.message
    finally:
        instance.dispose()


def _nothing_job():
    from dagster import job, op

    @op
    def nothing():
        pass

    @job
    def alive():
        nothing()

    return alive
