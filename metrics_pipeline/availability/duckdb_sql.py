"""One DuckDB statement per hour folder: read its files, apply the rules, group by minute.

The SQL is built from the constants of :mod:`rules`; DuckDB reads JSON Lines (plain or gzip) and
Parquet in process, so only the grouped rows reach Python. Memory is bounded by DuckDB's
``memory_limit`` (it spills to ``temp_directory``), never by the size of the hour.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb

from metrics_pipeline.availability import rules
from metrics_pipeline.semantics import SKETCH_LOG_GAMMA, ZERO_BUCKET, Sketch

#: Fields read from every event, as text (``cC`` apart: an object in JSON, a struct in Parquet).
TEXT_FIELDS = (
    "eventId",
    "time",
    "data_baseType",
    "cloudEnvironment",
    "ScScenario",
    "ScPartner",
    "OperationName",
    "CallerName",
    "RequestType",
    "RoleInstance",
    "SLLVersion",
    "Latency",
    "RequestStatus",
    "testHeader",
    "quoteIsTest",
    "isTest",
    "STID",
)
#: The record compared for duplicates without an eventId, and the order that picks one copy.
RECORD = (
    "time",
    *[f for f in TEXT_FIELDS if f not in ("eventId", "time")],
    "cc_scenario",
    "cc_partner",
)
#: GROUPING() codes of the statement's three grouping sets.
STATS_SET, MINUTE_SET, SKETCH_SET = 2, 3, 1
MINUTE_KEY = ("StartTime", "ScenarioId", "PartnerId", "RequestType", "Environment", "STID")


class EventFilesUnreadable(RuntimeError):
    """DuckDB could not read an hour's files (corrupt line, bad Parquet)."""


@dataclass
class HourAggregate:
    """What one hour folder gives: minute rows, per-scenario latency sketches, and counts."""

    minutes: dict[tuple, dict] = field(default_factory=dict)
    sketches: dict[str, Sketch] = field(default_factory=dict)
    events_read: int = 0
    duplicates: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(rules.DROP_REASONS, 0))
    scenario_levels: dict[str, int] = field(default_factory=dict)
    partner_levels: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(r["TotalRequests"] for r in self.minutes.values())


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _empty(expr: str) -> str:
    return f"coalesce({expr}, '') = ''"


def _in(expr: str, values: Sequence[str]) -> str:
    return f"{expr} IN ({', '.join(lit(v) for v in values)})"


def _contains_any(expr: str, parts: Sequence[str]) -> str:
    return "(" + " OR ".join(f"contains({expr}, {lit(p)})" for p in parts) + ")"


def environment_sql(col: str = "cloudEnvironment") -> str:
    low = f"lower({q(col)})"
    return (
        f"({_empty(q(col))} OR (NOT {_in(low, rules.NON_PROD_EXACT)} AND NOT "
        f"{_contains_any(low, rules.NON_PROD_PARTS)} AND NOT "
        f"{_contains_any(low, rules.NON_PROD_PROD)}) OR (contains({low}, 'prod') AND NOT "
        f"{_contains_any(low, rules.NON_PROD_PROD)}))"
    )


def _not_true(col: str) -> str:
    return f"({_empty(q(col))} OR lower({q(col)}) <> 'true')"


def real_traffic_sql() -> str:
    return f"({_empty(q('testHeader'))} AND {_not_true('quoteIsTest')} AND {_not_true('isTest')})"


def _cut(column: str, expr: str) -> str:
    return f"substring(coalesce({expr}, ''), 1, {rules.KEY_LENGTHS[column]})"


def _fallback(
    column: str, exprs: Sequence[str], levels: Sequence[str], fallback: str | None = None
) -> tuple[str, str]:
    """CASE expressions for the first non-empty value and its level; with ``fallback`` given,
    an event with none gets ('', fallback)."""
    value = " ".join(f"WHEN NOT {_empty(e)} THEN {_cut(column, e)}" for e in exprs)
    level = " ".join(
        f"WHEN NOT {_empty(e)} THEN {lit(n)}" for e, n in zip(exprs, levels, strict=False)
    )
    if fallback is None:
        return f"CASE {value} END", f"CASE {level} END"
    return f"CASE {value} ELSE '' END", f"CASE {level} ELSE {lit(fallback)} END"


def json_source(files: Sequence[Path]) -> str:
    columns = {f: "VARCHAR" for f in TEXT_FIELDS} | {"cC": "JSON"}
    spec = "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in columns.items()) + "}"
    paths = "[" + ", ".join(lit(str(f)) for f in files) + "]"
    cc = f"cC->>{lit(rules.CC_SCENARIO)} AS cc_scenario, cC->>{lit(rules.CC_PARTNER)} AS cc_partner"
    fields = ", ".join(q(f) for f in TEXT_FIELDS)
    return (
        f"SELECT {fields}, {cc} FROM read_json({paths}, format = 'newline_delimited', "
        f"columns = {spec})"
    )


def parquet_source(files: Sequence[Path], schema: dict[str, str]) -> str:
    """Parquet columns cast to text; a column missing from every file reads as NULL."""
    paths = "[" + ", ".join(lit(str(f)) for f in files) + "]"
    parts = []
    for f in TEXT_FIELDS:
        parts.append(
            f"CAST({q(f)} AS VARCHAR) AS {q(f)}" if f in schema else f"NULL::VARCHAR AS {q(f)}"
        )
    for key, alias in ((rules.CC_SCENARIO, "cc_scenario"), (rules.CC_PARTNER, "cc_partner")):
        if "cC" in schema:
            parts.append(f"to_json(cC)->>{lit(key)} AS {alias}")
        else:
            parts.append(f"NULL::VARCHAR AS {alias}")
    return f"SELECT {', '.join(parts)} FROM read_parquet({paths}, union_by_name = true)"


def hour_statement(source: str, hour: datetime) -> str:
    """The hour's statement over ``source`` (a SELECT of the text fields); ``$oms`` is the list
    of OmsOperation names. Grouping set 0: counts by drop reason and levels, and the minute rows;
    grouping set 1: latency sketch buckets per scenario."""
    start, end = hour.isoformat(), (hour + timedelta(hours=1)).isoformat()
    nulls_last = ", ".join(f"{q(c)} ASC NULLS LAST" for c in RECORD)
    scenario, scenario_level = _fallback(
        "ScenarioId",
        [
            "cc_scenario",
            q("ScScenario"),
            f"CASE WHEN list_contains($oms, {q('OperationName')}) THEN {q('OperationName')} END",
        ],
        rules.SCENARIO_LEVELS,
    )
    partner, partner_level = _fallback(
        "PartnerId", ["cc_partner", q("ScPartner"), q("CallerName")], rules.PARTNER_LEVELS, "none"
    )
    return f"""
WITH src AS ({source}),
numbered AS (
  SELECT * EXCLUDE (copy_no) FROM (
    SELECT *, row_number() OVER (w ORDER BY {nulls_last}) AS copy_no, count(*) OVER w AS copies
    FROM (SELECT *, nullif({q("eventId")}, '') AS eid FROM src) WHERE eid IS NOT NULL
    WINDOW w AS (PARTITION BY eid)
  ) WHERE copy_no = 1
  UNION ALL BY NAME
  SELECT * EXCLUDE ({q("eventId")}), NULL::VARCHAR AS {q("eventId")}, NULL::VARCHAR AS eid,
    count(*) AS copies
  FROM src WHERE coalesce({q("eventId")}, '') = '' GROUP BY ALL
),
typed AS (
  SELECT *, TRY_CAST({q("time")} AS TIMESTAMPTZ) AS ts,
    {scenario} AS scen, {scenario_level} AS scen_level
  FROM numbered
),
classified AS (
  SELECT *, CASE
      WHEN ts IS NULL THEN 'bad_time'
      WHEN ts < TIMESTAMPTZ {lit(start + "+00:00")}
        OR ts >= TIMESTAMPTZ {lit(end + "+00:00")} THEN 'outside_hour'
      WHEN NOT coalesce({_in(f"lower({q('data_baseType')})", rules.BASE_TYPES)}, false)
        THEN 'base_type'
      WHEN NOT {environment_sql()} THEN 'environment'
      WHEN NOT {real_traffic_sql()} THEN 'test_traffic'
      WHEN scen IS NULL THEN 'no_scenario'
    END AS drop_reason
  FROM typed
),
kept AS (
  SELECT drop_reason, copies,
    CASE WHEN drop_reason IS NULL THEN scen END AS ScenarioId,
    CASE WHEN drop_reason IS NULL THEN scen_level END AS scen_level,
    CASE WHEN drop_reason IS NULL THEN {partner} END AS PartnerId,
    CASE WHEN drop_reason IS NULL THEN {partner_level} END AS partner_level,
    CASE WHEN drop_reason IS NULL THEN CAST(date_trunc('minute', ts) AS TIMESTAMP) END AS StartTime,
    CASE WHEN drop_reason IS NULL THEN {_cut("RequestType", q("RequestType"))} END AS RequestType,
    CASE WHEN drop_reason IS NULL THEN {_cut("Environment", q("cloudEnvironment"))} END
      AS Environment,
    CASE WHEN drop_reason IS NULL THEN {_cut("STID", q("STID"))} END AS STID,
    coalesce(regexp_full_match({q("RequestStatus")}, {lit(rules.SUCCESS_STATUS)}), false)
      AS success,
    CASE WHEN drop_reason IS NULL AND regexp_full_match({q("Latency")}, {lit(rules.JSON_NUMBER)})
          AND isfinite(TRY_CAST({q("Latency")} AS DOUBLE))
          AND TRY_CAST({q("Latency")} AS DOUBLE) >= 0
      THEN TRY_CAST({q("Latency")} AS DECIMAL(18, {rules.LATENCY_DECIMALS})) END AS lat
  FROM classified
)
SELECT GROUPING(drop_reason) + 2 * GROUPING(bucket) AS set_id, drop_reason, scen_level,
  partner_level, StartTime, ScenarioId, PartnerId, RequestType, Environment, STID, bucket,
  count(*) AS total, count(*) FILTER (WHERE success) AS ok, count(lat) AS lat_count,
  sum(lat) AS lat_sum, sum(copies - 1) AS dups
FROM (SELECT *, CASE WHEN lat IS NULL THEN NULL WHEN lat <= 0 THEN {ZERO_BUCKET}
        ELSE CAST(ceil(ln(CAST(lat AS DOUBLE)) / {SKETCH_LOG_GAMMA!r}) AS BIGINT) END AS bucket
      FROM kept)
GROUP BY GROUPING SETS (
  (drop_reason, scen_level, partner_level),
  (StartTime, ScenarioId, PartnerId, RequestType, Environment, STID),
  (ScenarioId, bucket)
)
"""


def connect(
    memory_limit: str = "1GB", temp_directory: str | None = None, threads: int | None = None
):
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(f"SET memory_limit = {lit(memory_limit)}")
    conn.execute("SET preserve_insertion_order = false")
    if temp_directory:
        conn.execute(f"SET temp_directory = {lit(temp_directory)}")
    if threads:
        conn.execute(f"SET threads = {int(threads)}")
    return conn


def is_parquet(path: Path) -> bool:
    return path.name.endswith(".parquet")


def is_json_lines(path: Path) -> bool:
    return path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")


def aggregate_hour(
    conn, files: Sequence[Path], hour: datetime, oms_operations: Sequence[str]
) -> HourAggregate:
    """Aggregate one hour folder's files (JSON Lines and Parquet together; duplicates are removed
    across both)."""
    out = HourAggregate()
    json_files = sorted(f for f in files if is_json_lines(f))
    parquet_files = sorted(f for f in files if is_parquet(f))
    sources = []
    try:
        if json_files:
            sources.append(json_source(json_files))
        if parquet_files:
            paths = "[" + ", ".join(lit(str(f)) for f in parquet_files) + "]"
            schema = dict(
                conn.execute(
                    f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                    f"read_parquet({paths}, union_by_name = true))"
                ).fetchall()
            )
            sources.append(parquet_source(parquet_files, schema))
        if not sources:
            return out
        sql = hour_statement(" UNION ALL ".join(f"({s})" for s in sources), hour)
        rows = conn.execute(sql, {"oms": sorted(set(oms_operations))}).fetchall()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise EventFilesUnreadable(
            f"event files of {hour:%Y-%m-%d %H}:00 unreadable: {first}"
        ) from exc
    for set_id, reason, s_level, p_level, start, *key, bucket, total, ok, n, lat, dups in rows:
        if set_id == STATS_SET:
            out.events_read += int(total) + int(dups)
            out.duplicates += int(dups)
            if reason is not None:
                out.dropped[reason] += int(total)
            else:
                out.scenario_levels[s_level] = out.scenario_levels.get(s_level, 0) + int(total)
                out.partner_levels[p_level] = out.partner_levels.get(p_level, 0) + int(total)
        elif set_id == SKETCH_SET:
            if key[0] is not None and bucket is not None:
                out.sketches.setdefault(key[0], Sketch()).add(int(bucket), int(n))
        elif start is not None:  # the minute set; dropped events group under a NULL key
            out.minutes[(start, *key)] = {
                "StartTime": start,
                "ScenarioId": key[0],
                "PartnerId": key[1],
                "RequestType": key[2],
                "Environment": key[3],
                "STID": key[4],
                "TotalRequests": total,
                "SuccessfulRequests": ok,
                "LatencyCount": n,
                "TotalLatency": lat if lat is not None else Decimal(0),
            }
    for row in out.minutes.values():
        finish_counts(row)
    return out


def finish_counts(row: dict) -> dict:
    """Derived columns of a row from its additive ones."""
    row["FailedRequests"] = row["TotalRequests"] - row["SuccessfulRequests"]
    row["AverageLatency"] = rules.average_latency(row["TotalLatency"], row["LatencyCount"])
    return row
