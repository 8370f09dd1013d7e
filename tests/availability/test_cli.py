"""`metrics-pipeline materialize|refresh --family availability`: Dagster runs of the family's jobs
on the instance in DAGSTER_HOME (runs, partitions and checks in the UI), with the rows the rules
give, idempotent, and a late file counted by the next refresh."""

from datetime import UTC, datetime, timedelta

from dagster import DagsterEventType, DagsterInstance
from sqlalchemy import select

from metrics_pipeline.availability.assets import DAILY, MINUTE, PUBLISHED
from metrics_pipeline.cli import main
from metrics_pipeline.tags import HOST_TAG
from tests.availability import events as ev
from tests.availability import reference as ref
from tests.availability.conftest import HOUR, expected_minutes, write_hours
from tests.availability.test_pipeline import minutes

WINDOW = [
    "--start",
    f"{HOUR:%Y-%m-%dT%H:%M}Z",
    "--end",
    f"{HOUR + timedelta(hours=3):%Y-%m-%dT%H:%M}Z",
]


def _instance_facts(home):
    instance = DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        checks = [
            e.asset_check_evaluation_data
            for r in runs
            for e in (
                rec.dagster_event
                for rec in instance.all_logs(
                    r.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
                )
            )
        ]
        return {
            "runs": runs,
            "checks": checks,
            "partitions": {
                key: instance.get_materialized_partitions(key) for key in (MINUTE, DAILY, PUBLISHED)
            },
        }
    finally:
        instance.dispose()


def test_the_command_line_runs_the_family_through_dagster(env, store, tmp_path, capsys):
    root = tmp_path / "events"
    written = write_hours(root)
    home = tmp_path / "dagster_home"
    lookback = (datetime.now(UTC).replace(tzinfo=None) - HOUR).days + 2
    environ = {
        **env,
        "DAGSTER_HOME": str(home),
        "METRICS_PARTITIONS_START": f"{HOUR:%Y-%m-%d}",
        "METRICS_AVAILABILITY_LOOKBACK_DAYS": str(lookback),
    }
    assert main(["materialize", "--family", "availability", *WINDOW], environ=environ) == 0
    out = capsys.readouterr().out
    events = sum(len(v) for v in written.values())
    # The whole days the window touches: 2025-03-01 and 03-02, 48 hours.
    day = datetime(HOUR.year, HOUR.month, HOUR.day)
    assert (
        f"availability: 48 hour(s) {day:%Y-%m-%d %H:%M} .. "
        f"{day + timedelta(hours=47):%Y-%m-%d %H:%M} UTC ({events} events read" in out
    )
    assert "2 day(s), 2 run(s)" in out  # one run over the hours, one over the days
    assert minutes(store) == expected_minutes(written)

    facts = _instance_facts(home)
    hours = {f"{day + timedelta(hours=i):%Y-%m-%d-%H:%M}" for i in range(48)}
    days = {f"{HOUR:%Y-%m-%d}", f"{HOUR + timedelta(days=1):%Y-%m-%d}"}
    assert facts["partitions"] == {MINUTE: hours, DAILY: days, PUBLISHED: days}
    assert len(facts["runs"]) == 2
    assert all(r.tags["metrics/source"] == "cli" and HOST_TAG in r.tags for r in facts["runs"])
    evaluated = {(c.check_name, c.partition) for c in facts["checks"]}
    assert {("validation", h) for h in hours} <= evaluated
    assert {("equals_minutes", d) for d in days} <= evaluated
    assert {("known_scenarios_only", d) for d in days} <= evaluated

    # A re-run changes nothing in the warehouse.
    before = {
        t.name: store.read(select(t).order_by(*t.primary_key.columns))
        for t in (store.tables.minute, store.tables.daily, store.tables.published)
    }
    assert main(["materialize", "--family", "availability", *WINDOW], environ=environ) == 0
    after = {
        t.name: store.read(select(t).order_by(*t.primary_key.columns))
        for t in (store.tables.minute, store.tables.daily, store.tables.published)
    }
    assert after == before
    capsys.readouterr()

    # A late file: the next refresh runs that hour and its day only.
    late_hour = HOUR + timedelta(hours=1)
    path = ev.hour_folder(root, late_hour) / "late.jsonl"
    ev.write_jsonl(path, ev.random_events(late_hour, 300, 99))
    written[late_hour] = written[late_hour] + ref.read_lines(path)
    assert main(["refresh", "--family", "availability"], environ=environ) == 0
    out = capsys.readouterr().out
    assert (
        f"availability: 1 hour(s) {late_hour:%Y-%m-%d %H:%M}" in out and "1 day(s), 2 run(s)" in out
    )
    assert minutes(store) == expected_minutes(written)
    assert main(["refresh", "--family", "availability"], environ=environ) == 0
    assert "nothing to refresh" in capsys.readouterr().out
    assert len(_instance_facts(home)["runs"]) == 6


def test_a_window_before_the_partitions_is_refused_in_one_line(env, tmp_path, capsys):
    environ = {**env, "METRICS_PARTITIONS_START": "2025-03-01"}
    args = [
        "materialize",
        "--family",
        "availability",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-02",
    ]
    assert main(args, environ=environ) == 2
    err = capsys.readouterr().err.strip()
    assert "before the first partition" in err and len(err.splitlines()) == 1
