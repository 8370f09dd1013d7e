"""From failed check evaluations and failed runs to Alertmanager alerts, as pure rules.

The sensor keeps, in its cursor, the latest failing evaluation of every check partition
(:func:`apply_evaluation`); :func:`check_alerts` and :func:`run_alerts` turn that state and the
latest finished run of every job into alerts (Alertmanager API v2 objects), and :func:`plan`
says what to post: every firing alert (re-posted before it expires) and the alerts that stopped
firing, resolved (``endsAt`` now). No Dagster, no network.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

#: Alertmanager's label for a Dagster check severity.
SEVERITIES = {"ERROR": "critical", "WARN": "warning"}
#: alertname per check name (one per kind); other checks get "<Family><CheckName>".
ALERT_NAMES = {
    "coverage": "MetricsCoverage",
    "hourly_backlog": "MetricsBacklog",
    "burn_rate": "AvailabilityBurnRate",
    "objectives": "MetricsObjectives",
}
#: Checks that judge the present at their partition's end (burn rates): the newest evaluated
#: partition is the check's state, so a newer hour that passes resolves it, and an older
#: partition's evaluation (a backfill) changes nothing.
PRESENT_CHECKS = frozenset({"burn_rate", "objectives"})
RUN_FAILED = "MetricsRunFailed"
#: Run statuses (DagsterRunStatus values) that fire MetricsRunFailed, and their severity.
RUN_SEVERITIES = {"FAILURE": "critical", "CANCELED": "warning"}
#: At most this many partitions are named in one summary.
NAMED_PARTITIONS = 3


@dataclass(frozen=True)
class Evaluation:
    """The latest evaluation of one check partition, in plain values."""

    asset_key: str  # the asset's user string, e.g. "error_rate_hourly"
    check_name: str
    partition: str | None
    passed: bool
    severity: str  # "ERROR" or "WARN"
    description: str | None = None
    metadata: Mapping | None = None  # plain values (MetadataValue unwrapped)

    @property
    def key(self) -> str:
        return f"{self.asset_key}:{self.check_name}"


@dataclass(frozen=True)
class FinishedRun:
    """The latest finished run of one job."""

    run_id: str
    job_name: str
    status: str  # DagsterRunStatus value
    family: str
    message: str = ""


def entities(evaluation: Evaluation) -> tuple[str | None, dict[str, str]]:
    """The entity kind (``biller`` / ``scenario``) a failed evaluation names, and each entity's
    reason; (None, {}) for a check about no entity (the backlog)."""
    meta = evaluation.metadata or {}
    if isinstance(meta.get("burning_billers"), Mapping):
        return "biller", {str(b): str(why) for b, why in meta["burning_billers"].items()}
    if isinstance(meta.get("missing_billers"), Mapping):
        return "biller", {str(b): str(why) for b, why in meta["missing_billers"].items()}
    if isinstance(meta.get("firing"), Mapping):
        return "scenario", {
            str(s): "burn rate " + ", ".join(map(str, names)) for s, names in meta["firing"].items()
        }
    return None, {}


def apply_evaluation(failing: dict, evaluation: Evaluation) -> dict:
    """``failing`` (check key -> partition -> what failed) after this evaluation: a failed WARN
    or ERROR evaluation replaces the partition's entry, a passed one removes it."""
    out = {k: dict(v) for k, v in failing.items()}
    partitions = out.setdefault(evaluation.key, {})
    part = evaluation.partition or ""
    if evaluation.passed or evaluation.severity not in SEVERITIES:
        partitions.pop(part, None)
    else:
        kind, named = entities(evaluation)
        own = (evaluation.metadata or {}).get("biller_severity")
        partitions[part] = {
            "severity": evaluation.severity,
            "description": evaluation.description or "",
            "kind": kind,
            "entities": named,
            # An entity's own severity when the check gives one (a ticket-level biller in an
            # hour where another biller pages stays a warning).
            "severities": {
                e: own[e] for e in named if isinstance(own, Mapping) and own.get(e) in SEVERITIES
            },
        }
    if not partitions:
        out.pop(evaluation.key)
    return out


def apply(failing: dict, latest: dict, evaluation: Evaluation) -> tuple[dict, dict]:
    """(failing, latest) after this evaluation: :func:`apply_evaluation`, except for the
    :data:`PRESENT_CHECKS`, whose newest partition (``latest``: check key -> partition)
    replaces what they said before and whose older partitions are ignored."""
    if evaluation.check_name not in PRESENT_CHECKS:
        return apply_evaluation(failing, evaluation), latest
    part = evaluation.partition or ""
    if part < latest.get(evaluation.key, ""):
        return failing, latest
    older = {k: v for k, v in failing.items() if k != evaluation.key}
    return apply_evaluation(older, evaluation), {**latest, evaluation.key: part}


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id of an alert: its label set, as Alertmanager identifies it."""
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.replace("-", "_").split("_"))


def alert_name(family: str, check_name: str) -> str:
    return ALERT_NAMES.get(check_name) or _camel(family) + _camel(check_name)


def asset_url(ui_url: str, asset_key: str) -> str:
    return f"{ui_url.rstrip('/')}/assets/{asset_key}?view=checks" if ui_url else ""


def run_url(ui_url: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/runs/{run_id}" if ui_url else ""


def _worst(severities: Iterable[str]) -> str:
    return "ERROR" if "ERROR" in severities else "WARN"


def _hours(partitions: list[str]) -> str:
    named = ", ".join(partitions[:NAMED_PARTITIONS])
    more = len(partitions) - NAMED_PARTITIONS
    return named + (f" and {more} more" if more > 0 else "")


def check_alerts(failing: Mapping, families: Mapping[str, str], ui_url: str = "") -> dict:
    """{fingerprint: alert} for the failing check partitions: one alert per check and entity
    (biller, scenario) it names, else one per check; ``families`` maps an asset key to its
    family."""
    groups: dict[tuple, list[tuple[str, dict, str | None, str]]] = {}
    for key, partitions in failing.items():
        for partition, entry in partitions.items():
            if entry["entities"]:
                own = entry.get("severities") or {}
                for entity, why in entry["entities"].items():
                    groups.setdefault((key, entry["kind"], entity), []).append(
                        (partition, entry, why, own.get(entity, entry["severity"]))
                    )
            else:
                groups.setdefault((key, None, None), []).append(
                    (partition, entry, None, entry["severity"])
                )
    alerts = {}
    for (key, kind, entity), found in sorted(groups.items(), key=lambda kv: str(kv[0])):
        asset_key, check_name = key.rsplit(":", 1)
        family = families.get(asset_key, "")
        found.sort(key=lambda f: f[0])
        severity = _worst(sev for _, _, _, sev in found)
        labels = {
            "alertname": alert_name(family, check_name),
            "severity": SEVERITIES[severity],
            "family": family,
            "asset_key": asset_key,
            "check_name": check_name,
        }
        parts = [p for p, _, _, _ in found if p]
        where = f" in {len(parts)} partition(s) ({_hours(parts)})" if parts else ""
        if kind:
            labels[kind] = entity
            reasons = sorted({why for _, _, why, _ in found})
            summary = f"{check_name}: {kind} {entity} failing{where}: {'; '.join(reasons)}"
        else:
            summary = f"{check_name} failing{where}: {found[-1][1]['description']}"
        alerts[fingerprint(labels)] = {
            "labels": labels,
            "annotations": {"summary": summary, "dagster_url": asset_url(ui_url, asset_key)},
        }
    return alerts


def run_alerts(runs: Iterable[FinishedRun], ui_url: str = "") -> dict:
    """{fingerprint: alert} for the jobs whose latest finished run failed or was canceled."""
    alerts = {}
    for run in runs:
        if run.status not in RUN_SEVERITIES:
            continue
        labels = {
            "alertname": RUN_FAILED,
            "severity": RUN_SEVERITIES[run.status],
            "family": run.family,
            "asset_key": "",
            "check_name": "",
            "job": run.job_name,
        }
        why = f": {run.message}" if run.message else ""
        alerts[fingerprint(labels)] = {
            "labels": labels,
            "annotations": {
                "summary": f"run {run.run_id} of {run.job_name} {run.status.lower()}{why}",
                "dagster_url": run_url(ui_url, run.run_id),
            },
        }
    return alerts


def _instant(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plan(
    previous: Mapping[str, dict], current: Mapping[str, dict], now: datetime, ttl: timedelta
) -> tuple[dict, list[dict]]:
    """(firing, resolved): every current alert with its first ``startsAt`` (kept from
    ``previous``) and ``endsAt`` ``now + ttl`` (re-posted each tick, it never expires while it
    fires); each previous alert no longer current with ``endsAt`` now."""
    firing = {}
    for fp, alert in current.items():
        starts = previous.get(fp, {}).get("startsAt") or _instant(now)
        firing[fp] = {**alert, "startsAt": starts, "endsAt": _instant(now + ttl)}
    resolved = [
        {**alert, "endsAt": _instant(now)} for fp, alert in previous.items() if fp not in current
    ]
    return firing, resolved


def webhook_message(alerts: list[dict], now: datetime, external_url: str = "") -> dict:
    """Alertmanager's webhook JSON (version 4) for these alerts (firing or resolved)."""
    stamped = []
    for alert in alerts:
        resolved = alert["endsAt"] <= _instant(now)
        stamped.append(
            {
                "status": "resolved" if resolved else "firing",
                "labels": alert["labels"],
                "annotations": alert["annotations"],
                "startsAt": alert["startsAt"],
                "endsAt": alert["endsAt"] if resolved else "0001-01-01T00:00:00Z",
                "generatorURL": alert["annotations"].get("dagster_url", ""),
                "fingerprint": fingerprint(alert["labels"]),
            }
        )
    common = dict(set.intersection(*(set(a["labels"].items()) for a in stamped))) if stamped else {}
    return {
        "version": "4",
        "groupKey": "{}:" + json.dumps(sorted(common.items())),
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in stamped) else "resolved",
        "receiver": "metrics_pipeline",
        "groupLabels": {},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": external_url,
        "alerts": stamped,
    }
