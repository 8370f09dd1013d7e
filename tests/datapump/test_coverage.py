"""Numbers that say how much they know (issue 19), through the command an operator runs with a
persistent Dagster instance, the warehouse and the API.

A biller whose shard stays busy has no daily or weekly row and no API point; the other billers'
rows equal an independent reference; the runs are SUCCESS with a WARN coverage check. A day
with 4 busy hours is served as 20 of 24 hours, partial. Once the flag clears, the next
materialize (or a refresh, without a daemon) makes every row and point complete.
"""

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, DagsterRunStatus
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.cli import main
from metrics_pipeline.datapump.refresh import range_tags
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.execution import execute
from metrics_pipeline.partitions import hours_between, parse_partitions_start
from metrics_pipeline.semantics import DAILY, HOURLY, WEEKLY
from tests.support import WINDOW_END, WINDOW_START, read_raw, reference, sqlite_environment

BUSY = 9  # alone in shard beta
OTHERS = (7, 8)
#: The CLI widens 2025-03-01 .. 03-04 to whole weeks: Sunday 02-23 .. Sunday 03-09.
FIRST, STOP = datetime(2025, 2, 23), datetime(2025, 3, 9)
WINDOW = ["--start", f"{WINDOW_START:%Y-%m-%d}", "--end", f"{WINDOW_END:%Y-%m-%d}"]
LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture
def env(tmp_path):
    e = sqlite_environment(tmp_path, per_hour=2)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**e, "DAGSTER_HOME": str(home), "METRICS_BUSY_RETRIES": "0"}


def set_processing(env, shard: str, biller: int, busy: bool) -> None:
    engine = create_engine(env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", shard))
    with engine.begin() as conn:
        conn.execute(
            text('UPDATE "BillerDataPump" SET "Processing" = :p WHERE "BillerId" = :b'),
            {"p": busy, "b": biller},
        )
    engine.dispose()


def rows(env, table: str, level_id: int) -> dict[tuple[int, datetime], dict]:
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    with engine.connect() as conn:
        found = conn.execute(
            text(
                f'SELECT "BillerId", "StartTime", "RequestCount", "CoveredHours", '
                f'"ExpectedHours" FROM "{table}" WHERE "TimeStampTypeId" = :l'
            ),
            {"l": level_id},
        ).mappings()
        out = {(r["BillerId"], datetime.fromisoformat(r["StartTime"])): dict(r) for r in found}
    engine.dispose()
    return out


TABLES = (
    "DataPumpResponseTimeAggregation",
    "DataPumpErrorAggregation",
    "DataPumpTimeoutErrorAggregation",
)


def expected_requests(env, level: str) -> dict[tuple[int, datetime], int]:
    """RequestCount per (biller, window) from the raw shard rows, for windows with calls."""
    shards = [env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", s) for s in ("alpha", "beta")]
    return {k: v["RequestCount"] for k, v in reference(read_raw(shards), level).items()}


def api_points(env, biller: int, level: int):
    app = create_app(ApiSettings(warehouse_url=env["METRICS_WAREHOUSE_URL"]))
    with TestClient(app, client=LOOPBACK) as client:
        response = client.get(
            f"/api/metrics/{biller}",
            params={
                "metricTypeId": 4,
                "timeStampTypeId": level,
                "from": f"{FIRST:%Y-%m-%d}T00:00:00Z",
                "to": f"{STOP:%Y-%m-%d}T00:00:00Z",
            },
        )
    return response


def runs_of(env) -> list:
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    return instance.get_runs()


def assert_oracle_exact(env, billers, level: str, level_id: int, hours: int) -> None:
    """Every window of the widened window: the reference's calls, complete coverage."""
    want = expected_requests(env, level)
    for table in TABLES:
        got = rows(env, table, level_id)
        for biller in billers:
            mine = {s: r for (b, s), r in got.items() if b == biller and FIRST <= s < STOP}
            assert sorted(mine) == [
                FIRST + i * timedelta(hours=hours)
                for i in range(int((STOP - FIRST) / timedelta(hours=hours)))
            ], (table, biller, level)
            for start, row in mine.items():
                assert row["RequestCount"] == want.get((biller, start), 0), (table, biller, start)
                assert (row["CoveredHours"], row["ExpectedHours"]) == (hours, hours)


HOURS_OF_WINDOW = int((STOP - FIRST) / HOURLY.length)


def check_partition_statuses(instance) -> dict[str, int]:
    """The coverage check's status per hour partition as the UI reads it (its partition status
    cache counts an evaluation only when it targets the partition's latest materialization)."""
    check = AssetCheckKey(AssetKey("error_rate_hourly"), "coverage")
    infos = instance.event_log_storage.get_asset_check_partition_info([check])
    out: dict[str, int] = {}
    for info in infos:
        status = info.latest_execution_status.value if info.is_current else "not current"
        out[status] = out.get(status, 0) + 1
    return out


UI_CHECK_STATUSES = """
query {
  assetNodes(assetKeys: [{path: ["error_rate_hourly"]}]) {
    assetCheckOrError(checkName: "coverage") {
      ... on AssetCheck {
        partitionStatuses {
          ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
        }
      }
    }
  }
}
"""


def ui_partition_statuses(env, monkeypatch) -> dict[str, int]:
    """The coverage check's partition statuses through the GraphQL query the UI's Partitions
    view of a check reads, against the code location served from workspace.yaml."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    workspace = str(Path(__file__).resolve().parents[2] / "workspace.yaml")
    with define_out_of_process_context(workspace, None, instance) as context:
        result = execute_dagster_graphql(context, UI_CHECK_STATUSES)
    [node] = result.data["assetNodes"]
    out: dict[str, int] = {}
    for r in node["assetCheckOrError"]["partitionStatuses"]["ranges"]:
        first, last = (datetime.strptime(r[k], "%Y-%m-%d-%H:%M") for k in ("startKey", "endKey"))
        out[r["status"]] = out.get(r["status"], 0) + hours_between(first, last) + 1
    return out


def test_busy_biller_has_no_rollups_then_heals_complete(env, capsys, monkeypatch):
    set_processing(env, "beta", BUSY, True)
    code = main(["materialize", *WINDOW], environ=env)
    out, err = capsys.readouterr()
    assert code == 1  # the CLI still names what it did not write
    # The summary says how many hours each figure holds; an unread biller has none, not 0 calls.
    summary = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[-4:]}
    assert summary[str(BUSY)] == [f"0/{HOURS_OF_WINDOW}", "-"], out
    assert all(summary[str(b)][0] == f"{HOURS_OF_WINDOW}/{HOURS_OF_WINDOW}" for b in OTHERS)
    assert f"biller {BUSY}: {int((STOP - FIRST) / HOURLY.length)} hour(s) not written (busy" in err

    # No row of the busy biller at any level in any table: never "no calls" for unread calls.
    for table in TABLES:
        for level in (HOURLY, DAILY, WEEKLY):
            assert not [k for k in rows(env, table, level.id) if k[0] == BUSY], (table, level)
    assert api_points(env, BUSY, 2).status_code == 404
    assert_oracle_exact(env, OTHERS, "daily", DAILY.id, 24)
    assert_oracle_exact(env, OTHERS, "weekly", WEEKLY.id, 168)
    for biller in OTHERS:
        points = api_points(env, biller, 3).json()["points"]
        assert len(points) == 2 and all(p["complete"] for p in points)

    # Busy is routine: every run of the command succeeded; the coverage check WARNs.
    runs = runs_of(env)
    assert len(runs) == 4 and {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
    assert any(r.tags.get("metrics/busy_billers") == str(BUSY) for r in runs)
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    check = AssetCheckKey(AssetKey("error_rate_hourly"), "coverage")
    [latest] = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
    evaluation = latest.event.dagster_event.event_specific_data
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert "busy" in evaluation.metadata["missing_billers"].value[str(BUSY)]
    assert evaluation.metadata["oldest_missing_hour"].value == FIRST.isoformat()

    assert check_partition_statuses(instance) == {"FAILED": HOURS_OF_WINDOW}
    # As the UI shows it: every materialized hour failed (WARN), none missing.
    assert ui_partition_statuses(env, monkeypatch) == {"FAILED": HOURS_OF_WINDOW}

    # The flag clears; the same window materialized again: everything complete and exact.
    set_processing(env, "beta", BUSY, False)
    assert main(["materialize", *WINDOW], environ=env) == 0
    assert check_partition_statuses(instance) == {"SUCCEEDED": HOURS_OF_WINDOW}
    assert ui_partition_statuses(env, monkeypatch) == {"SUCCEEDED": HOURS_OF_WINDOW}
    assert_oracle_exact(env, (*OTHERS, BUSY), "daily", DAILY.id, 24)
    assert_oracle_exact(env, (*OTHERS, BUSY), "weekly", WEEKLY.id, 168)
    for level in (1, 2, 3):
        points = api_points(env, BUSY, level).json()["points"]
        assert points and all(p["complete"] for p in points)
        assert all(p["coveredHours"] == p["expectedHours"] for p in points)


def run_level(env, level, first: datetime, last: datetime, billers: str | None = None) -> None:
    start = parse_partitions_start(None)
    defs = build_definitions(env, resolve=True)
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    tags = {
        **range_tags(level, start, first, last),
        **({"metrics/billers": billers} if billers else {}),
    }
    result = execute(defs.resolve_job_def(level.job_name), instance, tags)
    assert result.success


def test_partly_busy_day_is_partial_until_a_refresh_heals_it(env, capsys):
    assert main(["materialize", *WINDOW], environ=env) == 0
    day = datetime(2025, 3, 2)  # a Sunday: its week starts with it
    busy_hours = (day + timedelta(hours=4), day + timedelta(hours=7))
    set_processing(env, "beta", BUSY, True)
    run_level(env, HOURLY, *busy_hours, billers=str(BUSY))  # the hours read again: busy
    run_level(env, DAILY, day, day)
    run_level(env, WEEKLY, day, day)
    # The 4 hours' old rows stay but cover nothing; the day and week sum the other hours.
    hourly = rows(env, TABLES[1], HOURLY.id)
    assert [hourly[(BUSY, day + timedelta(hours=h))]["CoveredHours"] for h in range(3, 9)] == [
        1,
        0,
        0,
        0,
        0,
        1,
    ]
    want = expected_requests(env, "hourly")
    written = sum(
        want.get((BUSY, day + timedelta(hours=h)), 0) for h in range(24) if not 4 <= h < 8
    )
    for table in TABLES:
        daily = rows(env, table, DAILY.id)[(BUSY, day)]
        assert (daily["RequestCount"], daily["CoveredHours"], daily["ExpectedHours"]) == (
            written,
            20,
            24,
        )
        weekly = rows(env, table, WEEKLY.id)[(BUSY, day)]
        assert (weekly["CoveredHours"], weekly["ExpectedHours"]) == (164, 168)
    [point] = [
        p for p in api_points(env, BUSY, 2).json()["points"] if p["t"].startswith("2025-03-02")
    ]
    assert (point["coveredHours"], point["expectedHours"], point["complete"]) == (20, 24, False)
    assert point["requestCount"] == written
    hours = {p["t"] for p in api_points(env, BUSY, 1).json()["points"]}
    assert "2025-03-02T05:00:00Z" not in hours and "2025-03-02T08:00:00Z" in hours

    # The flag clears. `metrics-pipeline refresh` (no daemon) reads the busy hours again.
    set_processing(env, "beta", BUSY, False)
    capsys.readouterr()
    assert main(["refresh"], environ=env) == 0, capsys.readouterr().err
    assert_oracle_exact(env, (*OTHERS, BUSY), "daily", DAILY.id, 24)
    assert_oracle_exact(env, (*OTHERS, BUSY), "weekly", WEEKLY.id, 168)
    [point] = [
        p for p in api_points(env, BUSY, 2).json()["points"] if p["t"].startswith("2025-03-02")
    ]
    assert point["complete"] and point["requestCount"] == sum(
        want.get((BUSY, day + timedelta(hours=h)), 0) for h in range(24)
    )


def test_a_refresh_that_leaves_busy_hours_unread_says_so_and_exits_1(env, capsys, monkeypatch):
    """More busy biller-hours than one refresh reads again (METRICS_REFRESH_HEAL_HOURS): the
    refresh names the biller and the hours left, and exits 1, never 0 with hours unwritten.
    Busy ledger rows older than the first partition (no refresh reads them again) do not use up
    that bound: the partitions' own busy hours are read."""
    set_processing(env, "beta", BUSY, True)
    assert main(["materialize", *WINDOW], environ=env) == 1
    set_processing(env, "beta", BUSY, False)
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    with engine.begin() as conn:  # the same busy hours, a year before the partitions start
        conn.execute(
            text(
                """INSERT INTO "CoverageLedger" ("Family", "EntityId", "TimeStampTypeId",
                "StartTime", "State", "Reason", "UpdatedDate") SELECT "Family", "EntityId",
                "TimeStampTypeId", datetime("StartTime", '-1 year'), "State", "Reason",
                "UpdatedDate" FROM "CoverageLedger" WHERE "State" = 'busy'"""
            )
        )
    engine.dispose()
    capsys.readouterr()
    monkeypatch.setenv("METRICS_REFRESH_HEAL_HOURS", "100")  # the run reads it, as the CLI
    assert main(["refresh"], environ={**env, "METRICS_REFRESH_HEAL_HOURS": "100"}) == 1
    out, err = capsys.readouterr()
    left = HOURS_OF_WINDOW - 100
    assert f"still waiting: {left} busy or unreachable biller-hour(s)" in out, out
    assert f"biller {BUSY}: {left} hour(s) not written (busy: not read again" in err, err
    assert "run it again" in err
    # Run again, it reads the rest: every row complete and exact.
    monkeypatch.delenv("METRICS_REFRESH_HEAL_HOURS")
    assert main(["refresh"], environ=env) == 0, capsys.readouterr().err
    assert "still waiting" not in capsys.readouterr().out
    assert_oracle_exact(env, (*OTHERS, BUSY), "daily", DAILY.id, 24)
    assert_oracle_exact(env, (*OTHERS, BUSY), "weekly", WEEKLY.id, 168)


def test_the_portal_names_billers_from_the_catalog(env, tmp_path):
    """/api/billers gives each biller's catalog name; an unreadable catalog gives ids only."""
    assert main(["materialize", *WINDOW, "--billers", "7"], environ=env) == 0
    engine = create_engine(env["METRICS_CATALOG_URL"])
    with engine.begin() as conn:
        conn.execute(
            text(
                'UPDATE "BillerElasticOptions" SET "BillerName" = \'Acme Water\' WHERE "BillerId" = 7'
            )
        )
    engine.dispose()
    for catalog, names in (
        (env["METRICS_CATALOG_URL"], {"7": "Acme Water"}),
        (f"sqlite:///{tmp_path}/no-such-catalog.db", {}),
    ):
        app = create_app(
            ApiSettings(warehouse_url=env["METRICS_WAREHOUSE_URL"], catalog_url=catalog)
        )
        with TestClient(app, client=LOOPBACK) as client:
            body = client.get("/api/billers").json()
        assert body == {"billers": [7], "names": names}
