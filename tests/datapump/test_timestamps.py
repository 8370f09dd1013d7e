"""Every row counted once, in the right hour, whatever form a SQLite shard stores it in.

The shard here is written the way another program (Python's sqlite3, a .NET service) writes it:
CreatedDate as text in any ISO form, ResponseTime sometimes not a number, some CreatedDate NULL
or not a date. The expected figures come from an independent parse of the same text.
"""

import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import sqlite as sqlite_dialect

from metrics_pipeline.cli import main
from metrics_pipeline.datapump.sql import ShardNames, hourly_facts_query, undated_query
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.semantics import DEFAULT_RULES
from metrics_pipeline.sql.render import render
from tests.support import reference, warehouse_rows

BILLER = 41
#: A Wednesday, so the window's whole weeks are simple; hours 10..13 are read.
H = datetime(2025, 3, 5, 10)
WINDOW = ["--start", "2025-03-05T10:00Z", "--end", "2025-03-05T14:00Z"]
MS = timedelta(milliseconds=1)


def forms(ts: datetime) -> list[str]:
    """The same UTC instant written in every form the issue lists."""
    local = ts + timedelta(hours=2)
    west = ts - timedelta(hours=5, minutes=30)
    ms = f"{ts.microsecond // 1000:03d}"
    return [
        ts.strftime("%Y-%m-%d %H:%M:%S"),  # Python's sqlite3, 0 fractional digits
        ts.strftime("%Y-%m-%d %H:%M:%S.") + ms,  # .NET, 3 digits
        ts.strftime("%Y-%m-%d %H:%M:%S.%f"),  # SQLAlchemy, 6 digits
        ts.strftime("%Y-%m-%dT%H:%M:%S"),  # T separator
        ts.strftime("%Y-%m-%dT%H:%M:%S.") + ms + "Z",  # Z suffix
        local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}+02:00",
        west.strftime("%Y-%m-%dT%H:%M:%S.%f") + "-05:30",
        # Local time far from the UTC text: sorts outside the window's own text range.
        west.strftime("%Y-%m-%d %H:%M:%S") + "-05:30",
        local.strftime("%Y-%m-%dT%H:%M:%S") + "+02:00",
    ]


def parse_utc(value: str | None) -> datetime | None:
    """Independent of the pipeline: Python's own ISO parser, offsets applied, naive UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def boundary_instants() -> list[datetime]:
    """Every window start and end, one millisecond before and after."""
    out = []
    for h in range(0, 5):
        edge = H + timedelta(hours=h)
        out += [edge - MS, edge, edge + MS]
    return out


def write_shard(path, rows: list[tuple], index: str, columns: str) -> None:
    """A shard as another program writes it: ``rows`` (CreatedDate, ResponseTime, StatusCode)
    of BILLER as given, one index ``index`` on ``columns``, BILLER not busy."""
    shard = sqlite3.connect(path)
    shard.executescript(
        f"""
        CREATE TABLE DataPumpDetail (DataPumpDetailId INTEGER PRIMARY KEY, BillerId INT NOT NULL,
            CreatedDate DATETIME NULL, ResponseTime DECIMAL(10,2) NULL, StatusCode VARCHAR(10) NULL);
        CREATE INDEX {index} ON DataPumpDetail ({columns});
        CREATE TABLE BillerDataPump (BillerId INT PRIMARY KEY, Processing BIT NOT NULL);
        """
    )
    shard.execute("INSERT INTO BillerDataPump VALUES (?, 0)", (BILLER,))
    shard.executemany(
        "INSERT INTO DataPumpDetail (BillerId, CreatedDate, ResponseTime, StatusCode) "
        "VALUES (?, ?, ?, ?)",
        [(BILLER, *r) for r in rows],
    )
    shard.commit()
    shard.close()


@pytest.fixture
def shard_env(tmp_path):
    catalog = sqlite3.connect(tmp_path / "catalog.db")
    catalog.execute(
        "CREATE TABLE BillerElasticOptions (BillerId INT PRIMARY KEY, BillerName NVARCHAR(200), "
        "ShardName NVARCHAR(128) NOT NULL, IsDataPumpEnabled BIT NOT NULL)"
    )
    catalog.execute(
        "INSERT INTO BillerElasticOptions VALUES (?, 'Other program', 'other', 1)", (BILLER,)
    )
    catalog.commit()
    catalog.close()
    rng = np.random.default_rng(5)
    rows = []
    junk = ["abc", "", "-", None, "12.5", 7, 30000]
    statuses = ["200", "500", " 204 ", "Timeout", None, "404", "504"]
    for i, instant in enumerate(boundary_instants()):
        for j, form in enumerate(forms(instant)):
            rows.append((form, junk[(i + j) % len(junk)], statuses[(i * 3 + j) % len(statuses)]))
    for k in range(400):  # ordinary traffic inside the window, mixed forms too
        instant = H + timedelta(milliseconds=int(rng.integers(0, 4 * 3_600_000)))
        form = forms(instant)[k % 9]
        rows.append((form, float(np.round(rng.lognormal(5, 0.5), 2)), statuses[k % 7]))
    undated = [(None, 10.0, "200"), ("not a date", 10.0, "200"), ("", 5.0, "500")]
    rows += undated
    write_shard(
        tmp_path / "other.db", rows, "IX_DataPumpDetail_Biller_Created", "BillerId, CreatedDate"
    )
    env = {
        "METRICS_CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
        "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{tmp_path}/{{shard}}.db",
        "METRICS_WAREHOUSE_URL": f"sqlite:///{tmp_path}/warehouse.db",
        "METRICS_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    return env, rows, len(undated)


def expected_hours(rows) -> dict:
    frame = pd.DataFrame(
        {
            "BillerId": BILLER,
            "CreatedDate": [parse_utc(r[0]) for r in rows],
            "ResponseTime": [
                r[1]
                if isinstance(r[1], (int, float)) and not isinstance(r[1], bool)
                else (
                    float(r[1])
                    if isinstance(r[1], str) and r[1].replace(".", "", 1).isdigit()
                    else None
                )
                for r in rows
            ],
            "StatusCode": [r[2] for r in rows],
        }
    )
    frame = frame[frame["CreatedDate"].notna()].copy()
    frame["CreatedDate"] = pd.to_datetime(frame["CreatedDate"])
    frame["ResponseTime"] = pd.to_numeric(frame["ResponseTime"]).astype(float)
    return reference(frame, "hourly")


FIELDS = [
    "RequestCount",
    "ResponseTimeCount",
    "TotalResponseTime",
    "FailedRequests",
    "TimeOutCount",
    "P50ResponseTime",
    "P99ResponseTime",
]


def test_every_form_counts_once_in_its_hour_with_a_persistent_instance(shard_env, capsys):
    env, rows, undated = shard_env
    # Rows in no hour are a partial failure: exit 1, the biller named with its count.
    assert main(["materialize", *WINDOW], environ=env) == 1
    err = capsys.readouterr().err
    assert f"biller {BILLER}: {undated} row(s) with a NULL or unreadable CreatedDate" in err
    got = warehouse_rows(env["METRICS_WAREHOUSE_URL"], 1)
    expected = expected_hours(rows)
    for h in range(4):
        key = (BILLER, H + timedelta(hours=h))
        for field in FIELDS:
            assert got[key][field] == expected[key][field], (key, field)
    # Rows just before the first hour and at the end of the last belong to hours 09 and 14.
    assert got[(BILLER, H - timedelta(hours=1))]["RequestCount"] == 9
    assert got[(BILLER, H + timedelta(hours=4))]["RequestCount"] == 18
    total = sum(v["RequestCount"] for v in got.values())
    assert total == len(rows) - undated  # nothing lost, nothing counted twice
    # A re-run changes nothing.
    before = warehouse_rows(env["METRICS_WAREHOUSE_URL"], 1)
    assert main(["materialize", *WINDOW], environ=env) == 1
    assert warehouse_rows(env["METRICS_WAREHOUSE_URL"], 1) == before


def test_one_hour_reads_equal_the_long_read_and_undated_rows_are_reported(shard_env, capsys):
    env, rows, undated = shard_env
    defs = build_definitions(env, resolve=True)
    job = defs.resolve_job_def("hourly_job")
    expected = expected_hours(rows)
    with DagsterInstance.ephemeral() as instance:
        for h in range(4):
            hour = H + timedelta(hours=h)
            result = job.execute_in_process(
                instance=instance, partition_key=f"{hour:%Y-%m-%d-%H:%M}"
            )
            assert result.success
            [check] = [
                e.event_specific_data
                for e in result.all_events
                if e.event_type_value == "ASSET_CHECK_EVALUATION"
                and e.event_specific_data.check_name == "coverage"
            ]
            assert check.passed
            assert check.metadata["undated_rows"].value == {str(BILLER): undated}
    got = warehouse_rows(env["METRICS_WAREHOUSE_URL"], 1)
    for h in range(4):
        key = (BILLER, H + timedelta(hours=h))
        assert got[key]["RequestCount"] == expected[key]["RequestCount"]
        assert got[key]["ResponseTimeCount"] == expected[key]["ResponseTimeCount"]


def test_the_index_on_biller_and_created_date_is_used(shard_env):
    env, _, _ = shard_env
    engine = create_engine(env["METRICS_SHARD_URL_TEMPLATE"].replace("{shard}", "other"))
    statement = render(
        hourly_facts_query(ShardNames(), DEFAULT_RULES, [BILLER], H, H + timedelta(hours=1)),
        sqlite_dialect.dialect(),
    )
    with engine.connect() as conn:
        plan = " ".join(r[3] for r in conn.execute(text(f"EXPLAIN QUERY PLAN {statement}")))
        assert "IX_DataPumpDetail_Biller_Created" in plan and "CreatedDate>?" in plan, plan
        query = undated_query(ShardNames(), [BILLER], H, H + timedelta(hours=1))
        plan = " ".join(
            r[3]
            for r in conn.execute(
                text(f"EXPLAIN QUERY PLAN {render(query, sqlite_dialect.dialect())}")
            )
        )
        # Index seeks (NULL, text before the digits and after them, the window), not a scan.
        assert "SCAN" not in plan, plan
        counts = conn.execute(query).all()
    engine.dispose()
    assert [tuple(r) for r in counts] == [(BILLER, 3)]


def test_junk_response_time_is_a_request_without_a_valid_time(shard_env, capsys):
    env, rows, _ = shard_env
    assert main(["materialize", *WINDOW], environ=env) == 1  # the shard also holds undated rows
    got = warehouse_rows(env["METRICS_WAREHOUSE_URL"], 1)
    hour = (BILLER, H + timedelta(hours=1))
    junk = sum(
        1
        for r in rows
        if parse_utc(r[0]) is not None
        and H + timedelta(hours=1) <= parse_utc(r[0]) < H + timedelta(hours=2)
        and r[1] in ("abc", "", "-", None)
    )
    assert junk > 0
    assert got[hour]["RequestCount"] - got[hour]["ResponseTimeCount"] == junk


def test_undated_rows_are_those_that_could_be_of_the_window(tmp_path):
    day = H.strftime("%Y-%m-%d")
    undated = [
        None,
        "",
        " " + day + " 10:00:00",
        "not a date",
        f"{day}t10:00:00",
        f"{day} 11:00:00+0000",
        f"{day} 10:61:00",
        1e30,
    ]
    # SQLite reads a number as a Julian day: a timestamp, if of no hour of the window.
    dated = [f"{day} 10:00:00", f"{day}T12:00:00Z", 2460740.0, 12.5]
    elsewhere = ["2019-01-01 10:61:00"]  # junk among other windows' timestamps: theirs to count
    write_shard(
        tmp_path / "s.db",
        [(c, 1.0, "200") for c in undated + dated + elsewhere],
        "IX_DataPumpDetail_Biller_Created",
        "BillerId, CreatedDate",
    )
    engine = create_engine(f"sqlite:///{tmp_path}/s.db")
    with engine.connect() as conn:
        counts = conn.execute(undated_query(ShardNames(), [BILLER], H, H + timedelta(hours=4)))
        assert [tuple(r) for r in counts] == [(BILLER, len(undated))]
    engine.dispose()
