"""The wrapped private Dagster pieces still match the Dagster installed."""

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
    materialize,
)

from metrics_pipeline.dagster_internal import throwaway_instance

days = DailyPartitionsDefinition(start_date="2025-01-01")


@asset(partitions_def=days)
def probe() -> MaterializeResult:
    return MaterializeResult(metadata={"rows": 1})


def test_throwaway_instance_overrides_methods_dagster_still_has():
    # If Dagster renames these, the overrides would silently stop saving time.
    storage_class = type(throwaway_instance().event_log_storage)
    base = storage_class.__mro__[1]
    for name in ("_store_asset_event", "_store_asset_event_tags"):
        assert callable(getattr(base, name, None)), name
        assert getattr(storage_class, name) is not getattr(base, name), name


def test_throwaway_instance_keeps_run_events_but_no_asset_index():
    instance = throwaway_instance()
    result = materialize([probe], instance=instance, partition_key="2025-01-02")
    assert result.success
    stored = instance.get_records_for_run(
        result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    assert [r.event_log_entry.dagster_event.partition for r in stored] == ["2025-01-02"]
    # The asset index (what the UI's asset pages read) was not maintained.
    assert instance.get_asset_records([AssetKey("probe")]) == []

    ordinary = DagsterInstance.ephemeral()
    assert materialize([probe], instance=ordinary, partition_key="2025-01-02").success
    assert [r.asset_entry.asset_key for r in ordinary.get_asset_records()] == [AssetKey("probe")]


def test_materialization_targets_reach_partitions_behind_newer_rematerializations():
    """Two partitions, the second materialized three times since: both get their latest
    materialization (one page of two records holds only the second's)."""
    from metrics_pipeline.dagster_internal import materialization_targets

    instance = DagsterInstance.ephemeral()
    assert materialize([probe], partition_key="2025-01-01", instance=instance).success
    for _ in range(3):
        assert materialize([probe], partition_key="2025-01-02", instance=instance).success
    targets = materialization_targets(instance, AssetKey("probe"), ["2025-01-01", "2025-01-02"])
    assert sorted(targets) == ["2025-01-01", "2025-01-02"]
    latest = instance.fetch_materializations(AssetKey("probe"), limit=1).records[0]
    assert targets["2025-01-02"].storage_id == latest.storage_id
