"""The availability family in Dagster: thin assets and per-partition checks over the plain
functions of :mod:`pipeline`, built from the environment by :func:`build_availability`."""

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    BackfillPolicy,
    BetaWarning,
    DefaultSensorStatus,
    Definitions,
    MaterializeResult,
    MetadataValue,
    PreviewWarning,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    TableSchema,
    asset,
    asset_check,
    define_asset_job,
    in_process_executor,
    sensor,
)
from sqlalchemy import Table

from metrics_pipeline.assets.columns import describe, table_schema
from metrics_pipeline.assets.partitioned_checks import Verdict, each_partition
from metrics_pipeline.availability import pipeline, sql
from metrics_pipeline.availability.partitions import availability_partitions
from metrics_pipeline.availability.resource import AvailabilityResource
from metrics_pipeline.availability.settings import AvailabilitySettings, events_root_config
from metrics_pipeline.clock import as_naive_utc, utc_now
from metrics_pipeline.settings import sensor_interval

GROUP = "availability"
OWNERS = ["team:metrics-platform"]
EVENTS = AssetKey("request_telemetry_events")
REFERENCE = AssetKey("availability_reference")
MINUTE = AssetKey("availability_minute")
DAILY = AssetKey("availability_daily")
PUBLISHED = AssetKey("availability_published")
#: The family's jobs: minute rows of a range of hours; daily and published rows of a range of days.
HOURLY_JOB = "availability_hourly_job"
DAILY_JOB = "availability_daily_job"
_TABLES = sql.build_tables()


_EV = "request_telemetry_events"
_KEY_SOURCES = {
    "StartTime": ("The minute, UTC (the event's time truncated to the minute)", f"{_EV}.time"),
    "ScenarioId": (
        "The scenario (first of the event's scenario fields that is set)",
        f"{_EV}.cc_scenario, ScScenario, OperationName",
    ),
    "PartnerId": (
        "The partner (first of the event's partner fields that is set, else 'none')",
        f"{_EV}.cc_partner, ScPartner, CallerName",
    ),
    "RequestType": ("The request type", f"{_EV}.RequestType"),
    "Environment": ("The cloud environment", f"{_EV}.cloudEnvironment"),
    "STID": ("The STID", f"{_EV}.STID"),
}
_MINUTE_SOURCES = {
    "Id": ("Row identity in the warehouse", None),
    **_KEY_SOURCES,
    "TotalRequests": (
        "Events kept in the minute, duplicates (same eventId) counted once",
        f"{_EV}.eventId, time, data_baseType",
    ),
    "SuccessfulRequests": ("Kept events whose RequestStatus is a success", f"{_EV}.RequestStatus"),
    "FailedRequests": ("TotalRequests - SuccessfulRequests", f"{_EV}.RequestStatus"),
    "LatencyCount": ("Kept events with a valid (finite, >= 0) Latency", f"{_EV}.Latency"),
    "TotalLatency": ("Sum of the valid Latency values (ms)", f"{_EV}.Latency"),
    "AverageLatency": ("TotalLatency / LatencyCount, 2 decimals", f"{_EV}.Latency"),
    "UpdatedDate": ("When the pipeline last changed the row", None),
}


def _rolled_up(below: str, names) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {"Id": ("Row identity in the warehouse", None)}
    for name in names:
        if name == "StartTime":
            out[name] = ("The day, UTC", f"{below}.StartTime")
        elif name == "AverageLatency":
            out[name] = (
                "TotalLatency / LatencyCount, 2 decimals (never an average of averages)",
                f"{below}.TotalLatency, LatencyCount",
            )
        elif name in _KEY_SOURCES:
            out[name] = (_KEY_SOURCES[name][0], f"{below}.{name}")
        elif name in ("UpdatedDate", "Id"):
            out[name] = _MINUTE_SOURCES[name]
        else:
            out[name] = (f"Sum of the {name} of the rows below", f"{below}.{name}")
    return out


def column_sources(table_name: str) -> dict[str, tuple[str, str | None]]:
    """{column: (meaning, sources or None when the pipeline writes it)} of an availability
    table, for the Columns tab (``meaning ← sources``) and docs/lineage.md."""
    if table_name == "AvailabilityMinute":
        return dict(_MINUTE_SOURCES)
    if table_name == "AvailabilityDaily":
        return _rolled_up("availability_minute", [c.name for c in _TABLES.daily.columns][1:])
    if table_name == "AvailabilityPublished":

        def both(*cols: str) -> str:
            c = ", ".join(cols)
            return f"availability_minute.{c} (hourly rows); availability_daily.{c} (daily row)"

        return {
            "Id": _MINUTE_SOURCES["Id"],
            "ScenarioId": ("The known scenario", both("ScenarioId")),
            "ScenarioName": ("The scenario's name", "availability_reference.ScenarioName"),
            "TimeStampTypeId": ("The level: 1 hourly, 2 daily", None),
            "StartTime": ("Start of the hour or day, UTC", both("StartTime")),
            "TotalRequests": (
                "Sum over partners, request types and environments",
                both("TotalRequests"),
            ),
            "SuccessfulRequests": ("Sum, as TotalRequests", both("SuccessfulRequests")),
            "FailedRequests": ("Sum, as TotalRequests", both("FailedRequests")),
            "Availability": (
                "100 x SuccessfulRequests / TotalRequests, 2 decimals",
                both("SuccessfulRequests", "TotalRequests"),
            ),
            "AverageLatency": (
                "Summed TotalLatency / summed LatencyCount",
                both("TotalLatency", "LatencyCount"),
            ),
            "P95Latency": ("95th percentile latency from the merged sketches", f"{_EV}.Latency"),
            "P99Latency": ("99th percentile latency from the merged sketches", f"{_EV}.Latency"),
            "UpdatedDate": _MINUTE_SOURCES["UpdatedDate"],
        }
    raise KeyError(table_name)


def _schema(table: Table) -> TableSchema:
    sources = column_sources(table.name)
    return table_schema(table, {c.name: describe(*sources[c.name]) for c in table.columns})


def _start(context) -> datetime:
    return as_naive_utc(context.partition_time_window.start)


def _end(context) -> datetime:
    return as_naive_utc(context.partition_time_window.end)


def _writes(report: pipeline.WindowReport) -> dict:
    return {
        "minute_rows": MetadataValue.json(report.minute_writes.as_dict()),
        "daily_rows": MetadataValue.json(report.daily_writes.as_dict()),
        "published_rows": MetadataValue.json(report.published_writes.as_dict()),
    }


def _each_day(context, availability: AvailabilityResource, write) -> MaterializeResult:
    """``write(store, day)`` for every day of the run's partition range, counts in metadata."""
    store = availability.store()
    writes = pipeline.WriteCounts()
    day = _start(context)
    while day < _end(context):
        writes.add(write(store, day))
        day += sql.ONE_DAY
    return MaterializeResult(metadata={"rows": MetadataValue.json(writes.as_dict())})


def _on_deps_updated() -> AutomationCondition:
    """Roll a day up again whenever one of its hours (or its daily row) was written."""
    return (
        AutomationCondition.any_deps_updated()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label("dependency updated")


def build_availability(environ: Mapping[str, str] | None = None, resolve: bool = False) -> dict:
    """Assets, checks, sensors and the resource of the family, as keyword lists for Definitions."""
    # The time-window mapping's allow_nonexistent_upstream_partitions, backfill_policy on @asset
    # and partitioned checks are marked beta/preview in Dagster 1.13 but are the documented way
    # to do this; silence those warnings here rather than process-wide.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        warnings.simplefilter("ignore", PreviewWarning)
        return _build(environ, resolve)


def _build(environ: Mapping[str, str] | None, resolve: bool) -> dict:
    from metrics_pipeline.resources import resource_urls

    env = os.environ if environ is None else environ
    parts = availability_partitions(env)
    settings = AvailabilitySettings.from_env(env)
    resource = AvailabilityResource(
        events_root=events_root_config(env, resolve),
        warehouse_url=resource_urls(env, resolve=resolve)["warehouse"],
        lookback_days=settings.lookback_days,
        refresh_minutes=settings.refresh_minutes,
        duckdb_memory_limit=settings.duckdb_memory_limit,
        slo_min_requests=settings.slo_min_requests,
    )

    events = AssetSpec(
        key=EVENTS,
        description="Request telemetry (seed 001's cooked hourly streams): METRICS_EVENTS_ROOT/"
        "YYYY/MM/DD/HH/ folders of *.jsonl, *.jsonl.gz and *.parquet files, one event per line "
        "or row. Files may land in an hour's folder after it was aggregated.",
        group_name=GROUP,
        owners=OWNERS,
        kinds={"json", "parquet"},
        partitions_def=parts.hourly,
    )
    reference = AssetSpec(
        key=REFERENCE,
        description="Reference tables Scenario (ScenarioId, ScenarioName, AvailabilityTarget), "
        "Customer (PartnerId, CustomerName) and OmsOperation (OperationName): created by the "
        "pipeline, filled by the operator (demo-data fills them).",
        group_name=GROUP,
        owners=OWNERS,
        kinds={"sql"},
        metadata={"dagster/table_name": "Scenario, Customer, OmsOperation"},
    )

    @asset(
        key=MINUTE,
        group_name=GROUP,
        owners=OWNERS,
        kinds={"duckdb", "sql"},
        partitions_def=parts.hourly,
        deps=[AssetDep(EVENTS), AssetDep(REFERENCE)],
        backfill_policy=BackfillPolicy.single_run(),
        description="AvailabilityMinute: per minute, scenario, partner, request type, environment "
        "and STID, the events of the hour folder that pass seed 001's rules (DuckDB reads the "
        "folder's files and groups them). Also writes the hour's latency sketches, its ledger "
        "row (AvailabilityIngest) and the file cursor, in the same transaction.",
        metadata={
            "dagster/column_schema": _schema(_TABLES.minute),
            "dagster/table_name": "AvailabilityMinute",
            "unique_key": "StartTime, ScenarioId, PartnerId, RequestType, Environment, STID",
        },
    )
    def availability_minute(context: AssetExecutionContext, availability: AvailabilityResource):
        store, cfg = availability.store(), availability.settings()
        hours = list(pipeline.cursor.hours(_start(context), _end(context)))
        reports = [pipeline.materialize_hour(store, cfg, h) for h in hours]
        writes = pipeline.WriteCounts()
        for r in reports:
            writes.add(r.writes)
        # Each hour partition carries its own figures; the run's totals stay on the run (its
        # log), never copied onto every partition where they read as that hour's.
        for r in reports:
            context.add_asset_metadata(
                {
                    "events_read": r.events_read,
                    "kept": r.kept,
                    "duplicates_removed": r.duplicates,
                    "files": r.files,
                    "rows": MetadataValue.json(r.writes.as_dict()),
                },
                partition_key=f"{r.hour:%Y-%m-%d-%H:%M}",
            )
        context.log.info(
            f"run totals: {len(hours)} hour(s), "
            f"{sum(r.events_read for r in reports)} events read, "
            f"{sum(r.kept for r in reports)} kept, "
            f"{sum(r.duplicates for r in reports)} duplicates removed; rows {writes.as_dict()}"
        )
        return MaterializeResult()

    @asset(
        key=DAILY,
        group_name=GROUP,
        owners=OWNERS,
        kinds={"sql"},
        partitions_def=parts.daily,
        deps=[AssetDep(MINUTE, partition_mapping=parts.daily_from_hourly)],
        backfill_policy=BackfillPolicy.single_run(),
        automation_condition=_on_deps_updated(),
        description="AvailabilityDaily: one row per day and key, exact sums of the day's minute "
        "rows (AverageLatency recomputed from the summed latency, never an average of averages).",
        metadata={
            "dagster/column_schema": _schema(_TABLES.daily),
            "dagster/table_name": "AvailabilityDaily",
            "unique_key": "StartTime, ScenarioId, PartnerId, RequestType, Environment, STID",
        },
    )
    def availability_daily(context: AssetExecutionContext, availability: AvailabilityResource):
        return _each_day(context, availability, pipeline.materialize_day)

    @asset(
        key=PUBLISHED,
        group_name=GROUP,
        owners=OWNERS,
        kinds={"sql"},
        partitions_def=parts.daily,
        deps=[AssetDep(DAILY), AssetDep(REFERENCE)],
        backfill_policy=BackfillPolicy.single_run(),
        automation_condition=_on_deps_updated(),
        description="AvailabilityPublished: per known scenario (all partners, request types and "
        "environments together), the day's 24 hourly rows (TimeStampTypeId 1) and its daily row "
        "(2), with Availability = 100 x successful / total (2 decimals, half away from zero) and "
        "P95/P99 latency from merged log-bucket sketches (within 0.5 %). Rows whose ScenarioId is "
        "not in Scenario are kept out.",
        metadata={
            "dagster/column_schema": _schema(_TABLES.published),
            "dagster/table_name": "AvailabilityPublished",
            "unique_key": "ScenarioId, TimeStampTypeId, StartTime",
        },
    )
    def availability_published(context: AssetExecutionContext, availability: AvailabilityResource):
        return _each_day(context, availability, pipeline.publish_day)

    checks = _build_checks(parts)
    jobs = [
        define_asset_job(
            HOURLY_JOB,
            selection=AssetSelection.assets(MINUTE),
            executor_def=in_process_executor,
            description="Minute rows (and the hour checks) for a range of hours.",
        ),
        define_asset_job(
            DAILY_JOB,
            selection=AssetSelection.assets(DAILY, PUBLISHED),
            executor_def=in_process_executor,
            description="Daily and published rows (and their checks) for a range of days.",
        ),
    ]
    return {
        "assets": [
            events,
            reference,
            availability_minute,
            availability_daily,
            availability_published,
        ],
        "asset_checks": checks,
        "jobs": jobs,
        "sensors": [
            build_refresh_sensor(
                sensor_interval(env).get("minimum_interval_seconds", settings.refresh_minutes * 60)
            ),
            AutomationConditionSensorDefinition(
                "availability_automation_sensor",
                target=[DAILY, PUBLISHED],
                default_status=_running(),
                minimum_interval_seconds=30,
            ),
        ],
        "resources": {"availability": resource},
    }


def build_availability_definitions(
    environ: Mapping[str, str] | None = None, resolve: bool = False
) -> Definitions:
    """The family as a Definitions object, for ``Definitions.merge`` in definitions.py."""
    return Definitions(**build_availability(environ, resolve=resolve))


def _running() -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING


def _build_checks(parts) -> list:
    @asset_check(
        asset=MINUTE,
        name="validation",
        partitions_def=parts.hourly,
        description="Counts of the hour's validation (in metadata): files, events read, "
        "duplicates removed, events dropped by each rule, which fallback level supplied "
        "ScenarioId and PartnerId, unknown ScenarioIds and partners. Fails (WARN) when requests "
        "carry a ScenarioId missing from Scenario (they are kept out of what is published), or "
        "when the hour was never aggregated.",
    )
    def minute_validation(context: AssetCheckExecutionContext, availability: AvailabilityResource):
        store = availability.store()
        yield from each_partition(context, parts.hourly, lambda _k, s, e: _validation(store, s, e))

    def _validation(store, start: datetime, end: datetime) -> Verdict:
        t = store.tables
        ledger = store.read(sql.rows_in_window(t.ingest, start, end))
        scen, partner = (store.read(s)[0] for s in sql.unknown_counts(t, sql.HOURLY, start, end))
        unknown = store.read(sql.distinct_unknown_scenarios(t, start, end))
        metadata: dict = {
            "hours_aggregated": len(ledger),
            "unknown_scenario_rows": int(scen["rows"] or 0),
            "unknown_scenario_requests": int(scen["requests"] or 0),
            "unknown_scenarios": MetadataValue.json(
                {r["ScenarioId"]: int(r["requests"]) for r in unknown[:50]}
            ),
            "unknown_partner_rows": int(partner["rows"] or 0),
            "unknown_partner_requests": int(partner["requests"] or 0),
        }
        if ledger:
            details = [json.loads(r["Details"]) for r in ledger]
            metadata |= {
                "files": sum(r["Files"] for r in ledger),
                "events_read": sum(r["EventsRead"] for r in ledger),
                "duplicates_removed": sum(r["Duplicates"] for r in ledger),
                "kept": sum(r["Kept"] for r in ledger),
                "dropped": MetadataValue.json(_sum_dicts(d.get("dropped", {}) for d in details)),
                "scenario_levels": MetadataValue.json(
                    _sum_dicts(d.get("scenario_levels", {}) for d in details)
                ),
                "partner_levels": MetadataValue.json(
                    _sum_dicts(d.get("partner_levels", {}) for d in details)
                ),
            }
        passed = bool(ledger) and metadata["unknown_scenario_requests"] == 0
        if not ledger:
            why = "the hour was not aggregated (no AvailabilityIngest row)"
        elif passed:
            why = (
                f"{metadata['kept']} of {metadata['events_read']} events kept, every scenario known"
            )
        else:
            names = ", ".join(r["ScenarioId"] for r in unknown[:5])
            why = (
                f"{metadata['unknown_scenario_requests']} request(s) of scenarios not in Scenario "
                f"({names}{', …' if len(unknown) > 5 else ''}): kept out of AvailabilityPublished"
            )
        return Verdict(
            passed=passed, severity=AssetCheckSeverity.WARN, description=why, metadata=metadata
        )

    @asset_check(
        asset=MINUTE,
        name="burn_rate",
        partitions_def=parts.hourly,
        description="Multi-window burn-rate alerts at the end of the hour, per scenario: 'page' "
        "(severity ERROR) when 1 h and 5 min both burn the 30-day error budget 14.4x faster than "
        "sustainable, 'ticket' (WARN) for 6x over 6 h and 30 min; a scenario with fewer than "
        "METRICS_SLO_MIN_REQUESTS requests in the long window never fires.",
    )
    def burn_rate(context: AssetCheckExecutionContext, availability: AvailabilityResource):
        store = availability.store()
        yield from each_partition(
            context,
            parts.hourly,
            lambda _k, _s, end: _burn_rate(store, end, availability.slo_min_requests),
        )

    def _burn_rate(store, end: datetime, min_requests: int) -> Verdict:
        states = pipeline.slo_states(store, end, min_requests)
        firing = {
            sid: [a["name"] for a in s["alerts"] if a["firing"]]
            for sid, s in states.items()
            if any(a["firing"] for a in s["alerts"])
        }
        paging = any("page" in names for names in firing.values())
        return Verdict(
            passed=not firing,
            severity=AssetCheckSeverity.ERROR if paging else AssetCheckSeverity.WARN,
            metadata={
                "firing": MetadataValue.json(firing),
                "budget_remaining": MetadataValue.json(
                    {sid: s["budgetRemaining"] for sid, s in states.items()}
                ),
                "alerts": MetadataValue.json({sid: s["alerts"] for sid, s in states.items()}),
            },
        )

    @asset_check(
        asset=DAILY,
        name="equals_minutes",
        partitions_def=parts.daily,
        description="The day's rows hold exactly the sums of its minute rows (counts and latency).",
    )
    def daily_equals_minutes(
        context: AssetCheckExecutionContext, availability: AvailabilityResource
    ):
        store = availability.store()
        yield from each_partition(context, parts.daily, lambda _k, s, e: _equals(store, s, e))

    def _equals(store, start: datetime, end: datetime) -> Verdict:
        t = store.tables
        minute = store.read(sql.sums_by(t.minute, [], start, end))[0]
        daily = store.read(sql.sums_by(t.daily, [], start, end))[0]
        same = all(_num(minute[c]) == _num(daily[c]) for c in sql.ADDITIVE)
        return Verdict(
            passed=same,
            severity=AssetCheckSeverity.ERROR,
            metadata={f"minute_{c}": float(_num(minute[c])) for c in sql.ADDITIVE}
            | {f"daily_{c}": float(_num(daily[c])) for c in sql.ADDITIVE},
        )

    @asset_check(
        asset=PUBLISHED,
        name="known_scenarios_only",
        partitions_def=parts.daily,
        description="Published rows exist only for ScenarioIds of the Scenario table, and their "
        "daily totals equal the daily rows of those scenarios.",
    )
    def published_known_only(
        context: AssetCheckExecutionContext, availability: AvailabilityResource
    ):
        store = availability.store()
        yield from each_partition(context, parts.daily, lambda _k, s, e: _known_only(store, s, e))

    def _known_only(store, start: datetime, end: datetime) -> Verdict:
        t = store.tables
        known = set(store.scenarios())
        rows = store.read(
            sql.rows_in_window(t.published, start, end, t.published.c.TimeStampTypeId == 2)
        )
        strangers = sorted({r["ScenarioId"] for r in rows} - known)
        expected = {
            r["ScenarioId"]: int(r["TotalRequests"] or 0)
            for r in store.read(sql.published_sums(t, sql.DAILY, start, end))
        }
        got = {r["ScenarioId"]: int(r["TotalRequests"]) for r in rows}
        return Verdict(
            passed=not strangers and got == expected,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "published_scenarios": len(got),
                "unknown_published": MetadataValue.json(strangers),
                "totals_match": got == expected,
            },
        )

    return [minute_validation, burn_rate, daily_equals_minutes, published_known_only]


def _num(value) -> Decimal:
    return Decimal(str(value or 0))


def _sum_dicts(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def build_refresh_sensor(interval_s: int):
    """Every ``interval_s`` seconds: the hours of the look-back whose files differ from the cursor
    get a run of availability_minute; their days follow through the automation sensor."""

    @sensor(
        name="availability_refresh_sensor",
        asset_selection=[MINUTE],
        minimum_interval_seconds=interval_s,
        default_status=_running(),
        description="Change-driven refresh of the availability family: lists the hour folders "
        "of the look-back (METRICS_AVAILABILITY_LOOKBACK_DAYS), compares name, size and mtime "
        "with the cursor recorded by the last aggregation, and requests the changed hours.",
    )
    def availability_refresh_sensor(
        context: SensorEvaluationContext, availability: AvailabilityResource
    ):
        now = utc_now()
        store, cfg = availability.store(), availability.settings()
        hours = pipeline.plan_refresh(store, cfg, now)
        if not hours:
            return SkipReason("no hour folder changed since it was aggregated")
        requests = []
        for hour in hours:
            files = pipeline.cursor.list_files(cfg.events_root, hour)
            fingerprint = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()[:12]
            requests.append(
                RunRequest(
                    run_key=f"{hour:%Y-%m-%d-%H}:{fingerprint}",
                    partition_key=f"{hour:%Y-%m-%d-%H:%M}",
                    tags={"availability/refresh": "true"},
                )
            )
        return SensorResult(run_requests=requests)

    return availability_refresh_sensor
