"""Driving alerts_sensor tick by tick, as the daemon would, on a real instance."""

import os
from datetime import datetime

from dagster import build_sensor_context, job, op

from metrics_pipeline.coverage import LedgerEntry, judge
from metrics_pipeline.datapump.assets.reporting import CoverageSettings, coverage_evaluation
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.execution import environment
from metrics_pipeline.partitions import parse_partitions_start, partition_key
from metrics_pipeline.semantics import HOURLY

START = parse_partitions_start(None)


class Daemon:
    """The sensor daemon's part: the definitions, and the cursor it stores between ticks (a new
    Daemon with the old cursor is a restarted daemon)."""

    def __init__(self, env: dict, instance, cursor: str | None = None):
        self.env, self.instance, self.cursor = env, instance, cursor
        self.defs = build_definitions(env, resolve=True)

    def tick(self):
        with environment(self.env):
            with build_sensor_context(
                instance=self.instance,
                cursor=self.cursor,
                repository_def=self.defs.get_repository_def(),
            ) as ctx:
                result = self.defs.resolve_sensor_def("alerts_sensor")(ctx)
                self.cursor = ctx.cursor
        return result


def report_coverage(instance, hour: datetime, missing: dict[str, tuple[str, str]]) -> None:
    """Log one hour's coverage evaluation as the hourly step does: billers 7, 8 and 9 expected,
    ``missing`` (biller -> (state, reason)) not written; ERROR above 0 missing."""
    ledger = {}
    for biller in ("7", "8", "9"):
        state, why = missing.get(biller, ("written", None))
        ledger[biller] = LedgerEntry(biller, hour, state, why)
    coverage = judge(hour, ["7", "8", "9"], ledger)
    settings = CoverageSettings(alert_threshold=0)
    log_event(
        instance, coverage_evaluation(coverage, partition_key(HOURLY, START, hour), settings, {})
    )


def log_event(instance, event) -> None:
    """Log ``event`` from a run of its own, as a step of the code location does."""

    @op(name="report")
    def report(context):
        context.log_event(event)

    @job(name="test_report_job")
    def report_job():
        report()

    assert report_job.execute_in_process(instance=instance).success


def alert_env(**values: str) -> dict:
    """The environment with these alert settings and no other METRICS_ALERT* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_ALERT")}
    return {**env, **values}
