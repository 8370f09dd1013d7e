"""The family as Definitions resolves it: assets, lineage, partition mapping, and the assets and
per-partition checks materialized on a real SQLite warehouse."""

from datetime import datetime, timedelta

from dagster import AssetKey, DagsterInstance, TimeWindowPartitionMapping, materialize
from sqlalchemy import select

from metrics_pipeline.availability import pipeline
from metrics_pipeline.availability.assets import (
    DAILY,
    EVENTS,
    MINUTE,
    PUBLISHED,
    build_availability,
)
from metrics_pipeline.availability.resource import AvailabilityResource
from metrics_pipeline.definitions import build_definitions
from tests.availability import events as ev
from tests.availability.conftest import HOUR, reference_rows, write_hours


def _env(tmp_path):
    return {
        "METRICS_DATA_DIR": str(tmp_path / "data"),
        "METRICS_EVENTS_ROOT": str(tmp_path / "events"),
        "METRICS_PARTITIONS_START": "2025-02-01",
    }


def test_definitions_hold_the_family(tmp_path):
    defs = build_definitions(_env(tmp_path))
    graph = defs.resolve_asset_graph()
    group = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "availability"}
    assert group == {EVENTS, AssetKey("availability_reference"), MINUTE, DAILY, PUBLISHED}
    assert graph.get(DAILY).parent_keys == {MINUTE}
    assert graph.get(PUBLISHED).parent_keys == {DAILY, AssetKey("availability_reference")}
    minute = graph.get(MINUTE)
    # The platform's partitions begin on the Sunday on or before the setting.
    assert minute.partitions_def.get_first_partition_key() == "2025-01-26-00:00"
    daily = graph.get(DAILY)
    mapping = graph.get_partition_mapping(DAILY, MINUTE)
    assert isinstance(mapping, TimeWindowPartitionMapping)
    hours = mapping.get_upstream_mapped_partitions_result_for_partitions(
        daily.partitions_def.subset_with_partition_keys(["2025-03-01"]),
        daily.partitions_def,
        minute.partitions_def,
        current_time=datetime(2025, 6, 1),
    ).partitions_subset.get_partition_keys()
    hours = sorted(hours)
    assert len(hours) == 24 and hours[0] == "2025-03-01-00:00" and hours[-1] == "2025-03-01-23:00"
    checks = {(k.asset_key, k.name) for k in graph.asset_check_keys}
    assert {
        (MINUTE, "validation"),
        (MINUTE, "burn_rate"),
        (DAILY, "equals_minutes"),
        (PUBLISHED, "known_scenarios_only"),
    } <= checks
    sensors = {s.name for s in defs.sensors}
    assert {"availability_refresh_sensor", "availability_automation_sensor"} <= sensors


def test_assets_and_checks_materialize_per_partition(tmp_path):
    env = _env(tmp_path)
    write_hours(tmp_path / "events")
    store = pipeline.open_store(env)
    reference_rows(store)
    family = build_availability(env, resolve=True)
    by_key = {a.key: a for a in family["assets"] if hasattr(a, "op")}
    instance = DagsterInstance.ephemeral()

    def run(keys, partition):
        assets = [by_key[k] for k in keys]
        checks = [
            c for c in family["asset_checks"] if any(ck.asset_key in keys for ck in c.check_keys)
        ]
        result = materialize(
            [*assets, *checks],
            partition_key=partition,
            resources=family["resources"],
            instance=instance,
        )
        assert result.success
        return {e.check_name: e for e in result.get_asset_check_evaluations()}

    hour_key = f"{HOUR:%Y-%m-%d-%H:%M}"
    checks = run([MINUTE], hour_key)
    validation = checks["validation"]
    assert not validation.passed  # the edge cases carry unknown scenarios
    assert "scenarios not in Scenario" in (validation.description or "")
    md = {k: v.value for k, v in validation.metadata.items()}
    assert md["duplicates_removed"] > 0 and md["unknown_scenario_requests"] > 0
    assert md["dropped"]["test_traffic"] > 0 and md["dropped"]["environment"] > 0
    assert set(md["scenario_levels"]) == {"cC", "ScScenario", "OperationName"}
    assert {"cC", "ScPartner", "CallerName", "none"} <= set(md["partner_levels"])
    assert "burn_rate" in checks
    checks = run([DAILY], "2025-03-01")
    assert checks["equals_minutes"].passed
    checks = run([PUBLISHED], "2025-03-01")
    assert checks["known_scenarios_only"].passed
    published = store.read(select(store.tables.published))
    assert {r["StartTime"].replace(tzinfo=None) for r in published} == {HOUR, datetime(2025, 3, 1)}


def test_refresh_sensor_requests_changed_hours(tmp_path):
    from dagster import build_sensor_context

    env = _env(tmp_path)
    write_hours(tmp_path / "events")
    store = pipeline.open_store(env)
    reference_rows(store)
    pipeline.compute_window(HOUR, HOUR + timedelta(hours=3), env)
    defs = build_definitions(env, resolve=True)
    sensor = defs.get_sensor_def("availability_refresh_sensor")
    # The events are from 2025, beyond the 7-day look-back of "now": widen it for the test.
    bound = defs.resources["availability"]
    far = AvailabilityResource(
        events_root=bound.events_root, warehouse_url=bound.warehouse_url, lookback_days=700
    )
    with build_sensor_context(resources={"availability": far}) as context:
        assert sensor(context).__class__.__name__ == "SkipReason"
    late = HOUR + timedelta(hours=1)
    ev.write_jsonl(
        ev.hour_folder(tmp_path / "events", late) / "late.jsonl", ev.random_events(late, 50, 5)
    )
    with build_sensor_context(resources={"availability": far}) as context:
        result = sensor(context)
    assert [r.partition_key for r in result.run_requests] == [f"{late:%Y-%m-%d-%H:%M}"]


def test_each_hour_partition_carries_its_own_figures(tmp_path):
    """A range run of the minute asset: every hour partition's materialization holds that hour's
    events, not the run's totals copied onto each."""
    env = _env(tmp_path)
    written = write_hours(tmp_path / "events")
    reference_rows(pipeline.open_store(env))
    family = build_availability(env, resolve=True)
    minute = next(a for a in family["assets"] if getattr(a, "key", None) == MINUTE)
    keys = [f"{HOUR + timedelta(hours=i):%Y-%m-%d-%H:%M}" for i in range(3)]
    result = materialize(
        [minute],
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
        resources=family["resources"],
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    events = {
        e.partition: e.metadata for e in result.asset_materializations_for_node(MINUTE.path[-1])
    }
    assert sorted(events) == keys
    read = {k: events[k]["events_read"].value for k in keys}
    for i, key in enumerate(keys):
        assert read[key] == len(written[HOUR + timedelta(hours=i)]), (key, read)
        assert "hours" not in events[key]
    assert len(set(read.values())) == 3
