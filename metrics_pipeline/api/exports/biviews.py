"""Seed 003's own activity-monitoring contract, beside ours (``/api/v2/exports-status``).

The seed names a task by the continuation token issued with its first page, spells the start
``initated_time`` (sic) and writes filter dates as ``2018-01-26 00:00:00``. The queues, events and
timings are ours: this module only re-shapes ``ExportService.describe``.
"""

from datetime import datetime
from typing import Any

from metrics_pipeline.api.exports.service import ExportService

#: The seed's filter dates: to the second, a space, no zone (UTC).
SEED_DATE = "%Y-%m-%d %H:%M:%S"


def seed_date(iso: str) -> str:
    """An ISO time of ours (``2025-03-01T00:00:00Z``) as the seed writes it."""
    return datetime.fromisoformat(iso.removesuffix("Z")).strftime(SEED_DATE)


def seed_shape(ours: dict[str, Any], token: str) -> dict[str, Any]:
    """Our description of a task (``ExportService.describe``) in the seed's fields."""
    tracker = ours["activity_tracker"]
    params = ours["query_config"]["filter_params"]
    out = {
        "accumulate": ours["accumulate"],
        "activity_tracker": {
            "elapsed_time": tracker["elapsed_time"],
            "initated_time": tracker["initiated_time"],
            "last_activity": tracker["last_activity"],
        },
        "message": ours["message"],
        "metric": ours["metric"],
        "query_config": {
            "filter_params": {
                "fromDate": seed_date(params["fromDate"]),
                "toDate": seed_date(params["toDate"]),
            },
            "object_name": ours["query_config"]["object_name"],
        },
        "status": ours["status"],
        "task_id": token,
    }
    if "events" in ours:
        out["events"] = ours["events"]
    return out


def seed_task(
    service: ExportService, task_id: str, record: dict[str, Any], events: bool = False
) -> dict[str, Any]:
    """A ``View`` of ``ExportService``: the task as seed 003 shows it, named by its first token."""
    ours = service.describe(task_id, record, events=events)
    return seed_shape(ours, service.first_token(task_id, record))
