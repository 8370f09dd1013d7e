"""Keeps the "billers" partitions equal to the catalog's DataPump-enabled billers."""

from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from metrics_pipeline.partitions import billers_partitions
from metrics_pipeline.resources.databases import CatalogResource


def partition_changes(current: list[str], enabled: list[int]) -> tuple[list[str], list[str]]:
    """(keys to add in BillerId order, keys to remove) so that ``current`` equals ``enabled``."""
    wanted = [str(b) for b in sorted(set(enabled))]
    have = set(current)
    return [k for k in wanted if k not in have], [k for k in current if k not in set(wanted)]


def _billers_sensor(context: SensorEvaluationContext, catalog: CatalogResource):
    enabled = [b.biller_id for b in catalog.enabled_billers()]
    current = context.instance.get_dynamic_partitions(billers_partitions.name)
    added, removed = partition_changes(current, enabled)
    if not added and not removed:
        return SkipReason(f"{len(current)} billers, unchanged")
    context.log.info(f"billers added: {added or 'none'}; removed: {removed or 'none'}")
    requests = []
    if added:
        requests.append(billers_partitions.build_add_request(added))
    if removed:
        requests.append(billers_partitions.build_delete_request(removed))
    return SensorResult(dynamic_partitions_requests=requests)


def build_billers_sensor(minimum_interval_seconds: int = 60) -> SensorDefinition:
    return sensor(
        name="billers_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Adds a 'billers' partition for each biller newly enabled in the catalog and "
        "removes the partition of a disabled one; its warehouse history is kept.",
    )(_billers_sensor)


billers_sensor = build_billers_sensor()
