"""Delivers failed checks and failed runs to Alertmanager (and a plain webhook): thin, the
rules are in :mod:`metrics_pipeline.alerts.rules`."""

import json
from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from metrics_pipeline.alerts.delivery import deliver
from metrics_pipeline.alerts.rules import Evaluation, FinishedRun, apply
from metrics_pipeline.alerts.rules import check_alerts as alerts_of_checks
from metrics_pipeline.alerts.rules import run_alerts as alerts_of_runs
from metrics_pipeline.alerts.settings import AlertSettings
from metrics_pipeline.coverage import DATAPUMP
from metrics_pipeline.dagster_internal import changed_check_partitions, latest_check_evaluation

_FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def family_of_group(group: str | None) -> str:
    """The source family of an asset group: the DataPump family's groups are its levels and
    its sources; the other families are their own group."""
    if not group or group == "sources" or group.startswith("metrics_"):
        return DATAPUMP
    return group


def _plain(metadata) -> dict:
    return {k: v.value if isinstance(v, MetadataValue) else v for k, v in metadata.items()}


def _evaluation(check_key, partition, status: str, evaluation) -> Evaluation | None:
    if status == "SUCCEEDED" or (evaluation is not None and evaluation.passed):
        return Evaluation(check_key.asset_key.to_user_string(), check_key.name, partition, True, "")
    if evaluation is None:
        return None
    return Evaluation(
        check_key.asset_key.to_user_string(),
        check_key.name,
        partition,
        False,
        evaluation.severity.value,
        evaluation.description,
        _plain(evaluation.metadata),
    )


def _latest_runs(context: SensorEvaluationContext, families: dict) -> list[FinishedRun]:
    """The latest finished run of every job of the code location."""
    runs = []
    for job in context.repository_def.get_all_jobs():
        [latest] = context.instance.get_runs(
            RunsFilter(job_name=job.name, statuses=_FINISHED), limit=1
        ) or [None]
        if latest is None:
            continue
        keys = latest.asset_selection or job.asset_layer.executable_asset_keys
        found = {families.get(k.to_user_string()) for k in keys} - {None}
        message = latest.tags.get("metrics/failure", "")
        runs.append(
            FinishedRun(
                latest.run_id,
                job.name,
                latest.status.value,
                found.pop() if len(found) == 1 else "",
                message,
            )
        )
    return runs


def build_alerts_sensor(settings: AlertSettings) -> SensorDefinition:
    def _alerts_sensor(context: SensorEvaluationContext):
        now_settings = AlertSettings.from_env()
        if not now_settings.enabled:
            return SkipReason("set METRICS_ALERTMANAGER_URL or METRICS_ALERT_WEBHOOK_URL")
        state = json.loads(context.cursor) if context.cursor else {}
        graph = context.repository_def.asset_graph
        families = {
            node.key.to_user_string(): family_of_group(node.group_name)
            for node in graph.asset_nodes
        }
        failing = state.get("failing", {})
        newest = state.get("newest", {})
        after = state.get("after")
        changed = changed_check_partitions(context.instance, list(graph.asset_check_keys), after)
        for check_key, partition, status, storage_id in sorted(changed, key=lambda c: c[3]):
            after = max(after or 0, storage_id)
            if status == "PLANNED":
                continue  # its evaluation comes with a newer storage id
            latest = (
                latest_check_evaluation(context.instance, check_key, partition)
                if status == "FAILED"
                else None
            )
            evaluation = _evaluation(check_key, partition, status, latest)
            if evaluation is not None:
                failing, newest = apply(failing, newest, evaluation)
        ui = now_settings.dagster_ui_url
        current = {
            **alerts_of_checks(failing, families, ui),
            **alerts_of_runs(_latest_runs(context, families), ui),
        }
        delivered, failures = deliver(state, current, datetime.now(UTC), now_settings)
        context.update_cursor(
            json.dumps({"after": after, "failing": failing, "newest": newest, **delivered})
        )
        for failure in failures:
            context.log.warning(f"alerts not delivered (retried next tick): {failure}")
        firing = len(delivered["firing"])
        if failures:
            return SkipReason(f"{firing} alert(s) firing; delivery failed: {'; '.join(failures)}")
        return SkipReason(f"{firing} alert(s) firing, delivered")

    return sensor(
        name="alerts_sensor",
        minimum_interval_seconds=settings.interval_s,
        default_status=DefaultSensorStatus.RUNNING
        if settings.enabled
        else DefaultSensorStatus.STOPPED,
        description="Delivers the latest evaluation of every failed asset check (ERROR as "
        "severity critical, WARN as warning) and every failed or canceled latest run of a job "
        "to Alertmanager (METRICS_ALERTMANAGER_URL, API v2) and/or a webhook "
        "(METRICS_ALERT_WEBHOOK_URL); re-posts firing alerts before they expire and resolves "
        "them when the check passes again or a newer run succeeds. An unreachable receiver "
        "delays delivery to the next tick; nothing is lost.",
    )(_alerts_sensor)
