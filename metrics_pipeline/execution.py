"""Runs that metrics-pipeline executes in its own process (the CLI of every family): the instance
they go to, how they are executed and reported, and runs whose process died.

Dagster's run monitoring (on in the instances ``materialize`` creates and in deploy/) watches the
runs the daemon launched. A run that ``metrics-pipeline`` executes in its own process carries its
host and PID as tags; when that process is gone, the run is reported failed here: by the next
command on the same host, and by ``dead_runs_sensor`` while a daemon runs.
"""

import json
import os
import socket
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from filelock import FileLock, Timeout

from metrics_pipeline.resources.engines import ConfigurationError
from metrics_pipeline.tags import HOST_TAG, PID_TAG

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad input to a command (a window, a setting, a name): one line, exit code 2."""


class EnvironmentFailure(RuntimeError):
    """A run failed as a whole because a database or a setting failed (exit code 2)."""


def process_tags() -> dict[str, str]:
    """Tags that let a later process tell whether this one is still alive."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: Runs a process of this host may leave behind when it dies: created but not yet started (killed
#: between creating the run and its first step) or started.
_UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTED]


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Report failed the NOT_STARTED and STARTED runs of this host whose process no longer
    exists."""
    host = socket.gethostname()
    dead = []
    runs = instance.get_runs(
        filters=RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: host}), limit=200
    )
    for run in runs:
        pid = run.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            instance.report_run_failed(
                run, message=f"the process that ran it (pid {pid} on {host}) is gone"
            )
            dead.append(run.run_id)
    return dead


def build_dead_runs_sensor(minimum_interval_seconds: int = 60) -> SensorDefinition:
    def _dead_runs_sensor(context: SensorEvaluationContext):
        dead = fail_dead_runs(context.instance)
        if not dead:
            return SkipReason("no run of a dead process")
        context.log.warning(f"marked failed: {', '.join(dead)}")
        return SkipReason(f"marked {len(dead)} run(s) of dead processes failed")

    return sensor(
        name="dead_runs_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Marks failed the runs that metrics-pipeline executed in a process that has "
        "died (kill -9, a lost machine) on this host; Dagster's run monitoring does the same "
        "for runs the daemon launched.",
    )(_dead_runs_sensor)


# --- executing a job in this process ---------------------------------------------------------

#: The commands report failures themselves, in one line each; Dagster's console logger would
#: print every step failure with its stack trace.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class InstanceError(ConfigurationError):
    """The Dagster instance in DAGSTER_HOME cannot be created or opened."""


#: In DAGSTER_HOME: held by a process while it creates, migrates or opens the instance there.
INSTANCE_LOCK = ".metrics-pipeline.lock"
#: How long a command waits for another one to finish creating or migrating the instance.
INSTANCE_LOCK_TIMEOUT_S = 300


@contextmanager
def instance_lock(home: Path):
    """Serialize, across processes, the creation and migration of the instance in ``home``.

    Dagster creates and stamps its SQLite storages (runs, event log index, schedules) when an
    instance is first opened, with no lock of its own: two processes opening a new folder at once
    both create the tables, and one fails (``table runs already exists``) or leaves two alembic
    heads that break every later command.
    """
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(home / INSTANCE_LOCK, timeout=INSTANCE_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as exc:
        raise InstanceError(
            f"Dagster instance in DAGSTER_HOME={home} is still being created or migrated by "
            f"another process after {INSTANCE_LOCK_TIMEOUT_S} s (lock {lock.lock_file})"
        ) from exc
    try:
        yield
    finally:
        lock.release()


def ensure_dagster_home(path: str) -> str:
    """Create DAGSTER_HOME with a minimal dagster.yaml (local storage, no telemetry) if missing.
    Call it under ``instance_lock``: the file is written once, by one process."""
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "# Created by metrics-pipeline: Dagster's default local storage in this folder.\n"
            "telemetry:\n  enabled: false\n"
            "# While a dagster-daemon runs (make dev), runs whose process died (kill -9, a lost\n"
            "# pod) are marked failed instead of staying STARTED; the retry machinery then treats\n"
            "# them like any failed run.\n"
            "run_monitoring:\n  enabled: true\n  start_timeout_seconds: 180\n"
            "  poll_interval_seconds: 30\n  max_resume_run_attempts: 0\n"
            "# Dagster's SQLite event log, in its usual place, keeping its databases open rather\n"
            "# than reconnecting per event (metrics_pipeline/dagster_internal.py).\n"
            "event_log_storage:\n  module: metrics_pipeline.dagster_internal\n"
            "  class: LeanSqliteEventLogStorage\n"
            f"  config:\n    base_dir: {json.dumps(str(home.resolve() / 'history' / 'runs'))}\n"
        )
    return str(home)


def open_instance(environ: Mapping[str, str]) -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME (so runs show in the UI), else a throw-away one."""
    from metrics_pipeline.dagster_internal import throwaway_instance

    home = environ.get("DAGSTER_HOME")
    if not home:
        return throwaway_instance()
    try:
        with instance_lock(Path(home)):
            instance = DagsterInstance.from_config(ensure_dagster_home(home))
            hold_connections(instance)
            # Reaches the run storage now (not in the middle of a run), and marks failed the runs
            # a killed metrics-pipeline process left NOT_STARTED or STARTED.
            fail_dead_runs(instance)
        return instance
    except InstanceError:
        raise
    except Exception as exc:  # OSError, YAML, config or storage errors: all one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InstanceError(
            f"Dagster instance in DAGSTER_HOME={home} cannot be opened: {first} (check that it "
            "is a folder you can write and that its dagster.yaml is valid and its storage "
            "reachable)"
        ) from exc


#: One command stores thousands of events; Dagster's PostgreSQL storages open a new connection
#: for each (a new server process: about 6 ms here, several seconds per ``materialize``).
HELD_CONNECTIONS = {"statement_timeout": 0, "pool_recycle": 3600, "max_overflow": 4}


def hold_connections(instance: DagsterInstance) -> None:
    """Keep the instance's database connections open for the command's lifetime, as
    dagster-webserver does for its own long-lived process (a no-op for SQLite storages, which
    open files). No statement timeout: a command waits for its writes, however slow. The event
    log stops asking its database for the same table before every check evaluation."""
    from metrics_pipeline.dagster_internal import remember_tables

    instance.optimize_for_webserver(**HELD_CONNECTIONS)
    remember_tables(instance)


@contextmanager
def lean_dagster_events():
    """One "planned" event per asset and run (not one per partition) and batched event writes,
    unless the user set these Dagster variables: on a persistent instance they are most of
    Dagster's cost per partition. Partition status is unchanged; a run that dies before it
    materializes leaves its partitions "missing" rather than "failed" (the ledger still says
    which entities are not written)."""
    wanted = {
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
        "DAGSTER_EVENT_BATCH_SIZE": "500",
    }
    with environment({k: os.environ.get(k, v) for k, v in wanted.items()}):
        yield


@contextmanager
def environment(values: Mapping[str, str]):
    """``os.environ`` with ``values`` set for the block, as it was afterwards."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(job, instance: DagsterInstance, tags: Mapping[str, str]):
    """One run of ``job`` in this process, quiet, never raising for a failed step. The run
    carries this process's host and PID, so a later process can tell if it died."""
    return job.execute_in_process(
        instance=instance, tags={**tags, **process_tags()}, run_config=QUIET, raise_on_error=False
    )


def step_error(result) -> tuple[str, str | None]:
    """The first failed step's message (one line) and the kind of error it names, if any."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            data = event.step_failure_data
            message = data.error.message.strip().splitlines()[0]
            message = message.removeprefix("dagster._core.definitions.events.Failure: ")
            meta = data.user_failure_data.metadata if data.user_failure_data else {}
            return message, meta["error"].value if "error" in meta else None
    return "run failed", None
