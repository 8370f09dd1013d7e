"""Runs whose process died: marked failed instead of staying STARTED forever.

Dagster's run monitoring (on in the instances ``materialize`` creates and in deploy/) watches the
runs the daemon launched. A run that ``metrics-pipeline`` executes in its own process carries its
host and PID as tags; when that process is gone, the run is reported failed here: by the next
command on the same host, and by ``dead_runs_sensor`` while a daemon runs.
"""

import os
import socket

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

HOST_TAG = "metrics/host"
PID_TAG = "metrics/pid"


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


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Report failed the STARTED runs of this host whose process no longer exists."""
    host = socket.gethostname()
    dead = []
    runs = instance.get_runs(
        filters=RunsFilter(statuses=[DagsterRunStatus.STARTED], tags={HOST_TAG: host}), limit=200
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
