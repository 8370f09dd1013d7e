"""Service-level objectives per biller (the operator-filled ``BillerObjective`` table), judged
with the shared burn-rate maths of :mod:`metrics_pipeline.slo` over the hourly rows.

Objectives are shares in (0, 1), never percentages: ``ErrorRateObjective`` 0.01 allows 1 % of
a biller's calls to fail, ``TimeoutRateObjective`` 0.005 allows 0.5 % to time out.
``P95ResponseTimeObjectiveMs`` is the most the hourly P95 response time may be. Only hours that
were read count (CoveredHours > 0): an hour not read is unknown, never zero traffic.

The rules are pure; :func:`read_states` is the one read, on a connection the caller opens (the
check through the warehouse resource, the API and ``/metrics`` through their reader).
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, inspect
from sqlalchemy.exc import OperationalError

from metrics_pipeline import slo
from metrics_pipeline.clock import as_naive_utc, utc_second
from metrics_pipeline.health import window_label
from metrics_pipeline.semantics import HOURLY
from metrics_pipeline.settings import from_env
from metrics_pipeline.sql.warehouse import (
    ERROR_RATE,
    RESPONSE_TIME,
    TIMEOUT_RATE,
    Aggregate,
    Warehouse,
    hourly_p95_query,
    objectives_query,
    window_sums_query,
)

if TYPE_CHECKING:
    from metrics_pipeline.resources.warehouse import WarehouseResource

OBJECTIVES_CHECK = "objectives"
#: Every SLO window as hourly rows read it, in hours (720, 6, 1).
WINDOW_HOURS = tuple(
    sorted({slo.at_grain(w, HOURLY.length) // HOURLY.length for w in slo.WINDOWS}, reverse=True)
)
BUDGET_HOURS = slo.BUDGET_WINDOW // HOURLY.length
#: The P95 objective is judged on the evaluated hour and reported over the ticket's long window.
P95_HOURS = max(slo.at_grain(a.long, HOURLY.length) for a in slo.BURN_ALERTS) // HOURLY.length
#: Billers per statement (SQL Server takes about 2,100 parameters).
CHUNK = 500


@dataclass(frozen=True)
class ObjectiveSettings:
    #: Fewer requests than this in a burn-rate window (or the P95's hour) never page: the
    #: biller is reported as "not enough traffic".
    min_requests: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ObjectiveSettings":
        return from_env(cls, {"min_requests": "METRICS_OBJECTIVE_MIN_REQUESTS"}, environ)


@dataclass(frozen=True)
class RateKind:
    """An objective on a share of calls: its key in the API, its label value in ``/metrics``,
    its words, its column, the hourly table and count it is judged on."""

    key: str
    metric: str
    label: str
    column: str
    aggregate: Aggregate
    bad_column: str


RATE_KINDS = (
    RateKind(
        "errorRate", "error_rate", "error rate", "ErrorRateObjective", ERROR_RATE, "FailedRequests"
    ),
    RateKind(
        "timeoutRate",
        "timeout_rate",
        "timeout rate",
        "TimeoutRateObjective",
        TIMEOUT_RATE,
        "TimeOutCount",
    ),
)
P95_COLUMN = "P95ResponseTimeObjectiveMs"


class InvalidObjective(ValueError):
    """An objective an operator cannot mean; its message is one line naming the biller."""


@dataclass(frozen=True)
class BillerObjective:
    biller_id: int
    error_rate: float | None = None
    timeout_rate: float | None = None
    p95_ms: float | None = None

    def rate(self, kind: RateKind) -> float | None:
        return self.error_rate if kind.key == "errorRate" else self.timeout_rate

    def as_json(self) -> dict:
        return {
            "errorRate": self.error_rate,
            "timeoutRate": self.timeout_rate,
            "p95Ms": self.p95_ms,
        }

    def as_row(self, now: datetime) -> dict:
        return {
            "BillerId": self.biller_id,
            "ErrorRateObjective": self.error_rate,
            "TimeoutRateObjective": self.timeout_rate,
            P95_COLUMN: self.p95_ms,
            "UpdatedDate": now,
        }


def _number(value, what: str, biller: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidObjective(f"biller {biller}: {what} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise InvalidObjective(f"biller {biller}: {what} is not a finite number: {value!r}")
    return number


def validate(biller_id, error_rate=None, timeout_rate=None, p95_ms=None) -> BillerObjective:
    """The objective, or :class:`InvalidObjective` saying in one line what is wrong: a BillerId
    that is not a positive integer, a rate outside (0, 1) (a share: 0.01 for 1 %), a P95 that
    is not a positive number of milliseconds, or no objective at all."""
    try:
        biller = int(biller_id)
    except (TypeError, ValueError):
        raise InvalidObjective(f"BillerId is not an integer: {biller_id!r}") from None
    if biller < 1:
        raise InvalidObjective(f"BillerId must be 1 or more, got {biller}")
    rates = {}
    for kind, value in zip(RATE_KINDS, (error_rate, timeout_rate), strict=True):
        rate = _number(value, kind.column, biller)
        if rate is not None and not 0 < rate < 1:
            raise InvalidObjective(
                f"biller {biller}: {kind.column} must be a share strictly between 0 and 1 "
                f"(0.01 for 1 %), got {value}"
            )
        rates[kind.key] = rate
    p95 = _number(p95_ms, P95_COLUMN, biller)
    if p95 is not None and p95 <= 0:
        raise InvalidObjective(f"biller {biller}: {P95_COLUMN} must be above 0 ms, got {p95_ms}")
    if p95 is None and all(r is None for r in rates.values()):
        raise InvalidObjective(f"biller {biller}: no objective given (set at least one)")
    return BillerObjective(biller, rates["errorRate"], rates["timeoutRate"], p95)


def from_row(row: Mapping) -> BillerObjective | InvalidObjective:
    """A BillerObjective row as an objective, or why it is not one (rows are operator-filled,
    possibly by hand in SQL)."""
    try:
        return validate(
            row["BillerId"], row["ErrorRateObjective"], row["TimeoutRateObjective"], row[P95_COLUMN]
        )
    except InvalidObjective as exc:
        return exc


# --- judging ----------------------------------------------------------------------------------

Sums = Mapping[int, tuple[int, int, int]]  # {window hours: (requests, bad, hours read)}


def _hours(h: int) -> str:
    return window_label(h * 3600)


def rate_state(kind: RateKind, allowed: float, sums: Sums, min_requests: int) -> dict:
    """One rate objective of a biller: the 30-day budget left and each burn alert's state, from
    the sums of the read hours of every window."""
    counts = {
        w: sums.get(slo.at_grain(w, HOURLY.length) // HOURLY.length, (0, 0, 0))[:2]
        for w in slo.WINDOWS
    }
    states = slo.evaluate(allowed, counts, min_requests)
    total, bad, read = sums.get(BUDGET_HOURS, (0, 0, 0))
    firing = [s for s in states if s.firing]
    longest = max(slo.at_grain(a.long, HOURLY.length) for a in slo.BURN_ALERTS) // HOURLY.length
    if firing:
        top = firing[0]  # BURN_ALERTS lists the page first
        long_h = slo.at_grain(top.alert.long, HOURLY.length) // HOURLY.length
        short_h = slo.at_grain(top.alert.short, HOURLY.length) // HOURLY.length
        state = top.alert.name
        why = (
            f"{kind.label} burns the 30-day budget {top.long_burn:.1f}x over {_hours(long_h)} "
            f"and {top.short_burn:.1f}x over {_hours(short_h)} ({top.alert.name}: "
            f">= {top.alert.factor:g}x; objective {allowed:g})"
        )
    elif not sums.get(longest, (0, 0, 0))[2]:
        state, why = "unknown", f"{kind.label}: no hour of the last {_hours(longest)} was read"
    elif all(s.gated for s in states):
        state = "not enough traffic"
        why = (
            f"{kind.label}: not enough traffic ({states[-1].long_requests} requests in "
            f"{_hours(longest)}, minimum {min_requests})"
        )
    else:
        state, why = "ok", f"{kind.label} within the objective {allowed:g}"
    return {
        "objective": allowed,
        "requests30d": total,
        "bad30d": bad,
        "coveredHours30d": read,
        "expectedHours30d": BUDGET_HOURS,
        "budgetRemaining": slo.budget_remaining(allowed, total, bad),
        "alerts": slo.alerts_json(states, HOURLY.length),
        "state": state,
        "severity": firing[0].alert.severity if firing else None,
        "why": why,
    }


def p95_state(
    objective_ms: float,
    hours: Mapping[datetime, tuple[int, float | None]],
    end: datetime,
    min_requests: int,
) -> dict:
    """The P95 objective on the hour ending at ``end``, from the read hours of the last
    :data:`P95_HOURS` ({hour start: (calls with a response time, P95 ms)}): over it is a
    ticket (WARN); the other hours are reported, not judged."""
    last = hours.get(end - HOURLY.length)
    over = sorted(h for h, (_, p95) in hours.items() if p95 is not None and p95 > objective_ms)
    base = {
        "objectiveMs": objective_ms,
        "p95Ms": None if last is None else last[1],
        "requests": None if last is None else last[0],
        "hoursOver": len(over),
        "hoursRead": len(hours),
        "hoursWindow": P95_HOURS,
        "severity": None,
    }
    if last is None or last[1] is None:
        return base | {
            "state": "unknown",
            "why": f"p95: the hour from {end - HOURLY.length:%Y-%m-%d %H:00} was not read",
        }
    if last[0] < min_requests:
        return base | {
            "state": "not enough traffic",
            "why": f"p95: not enough traffic ({last[0]} timed calls in the hour, "
            f"minimum {min_requests})",
        }
    if last[1] > objective_ms:
        return base | {
            "state": "ticket",
            "severity": "WARN",
            "why": f"p95 {last[1]:g} ms over the {objective_ms:g} ms objective in the hour from "
            f"{end - HOURLY.length:%Y-%m-%d %H:00} ({len(over)} of {len(hours)} read hours of "
            f"the last {_hours(P95_HOURS)} over)",
        }
    return base | {"state": "ok", "why": f"p95 {last[1]:g} ms within {objective_ms:g} ms"}


def biller_state(
    objective: BillerObjective,
    sums: Mapping[str, Sums],
    p95_hours: Mapping[datetime, tuple[int, float | None]],
    end: datetime,
    min_requests: int,
) -> dict:
    """Every objective of one biller at ``end``, its worst severity (ERROR: a page-level burn;
    WARN: a ticket-level burn or the P95 over), its state and why."""
    out: dict = {"billerId": objective.biller_id, "objectives": objective.as_json()}
    parts = []
    for kind in RATE_KINDS:
        allowed = objective.rate(kind)
        out[kind.key] = (
            None
            if allowed is None
            else rate_state(kind, allowed, sums.get(kind.key, {}), min_requests)
        )
        parts.append(out[kind.key])
    out["p95"] = (
        None
        if objective.p95_ms is None
        else p95_state(objective.p95_ms, p95_hours, end, min_requests)
    )
    parts = [p for p in (*parts, out["p95"]) if p is not None]
    severities = {p["severity"] for p in parts}
    severity = "ERROR" if "ERROR" in severities else "WARN" if "WARN" in severities else None
    states = {p["state"] for p in parts}
    if severity:
        state = "page" if severity == "ERROR" else "ticket"
        why = "; ".join(p["why"] for p in parts if p["severity"])
    elif "ok" in states:
        state, why = "ok", "within every objective"
    else:
        state = "not enough traffic" if "not enough traffic" in states else "unknown"
        why = "; ".join(p["why"] for p in parts)
    return out | {"severity": severity, "state": state, "why": why}


@dataclass(frozen=True)
class Objectives:
    """What :func:`read_states` found: each judged biller's state, and the rows it could not
    use (invalid objectives, by BillerId)."""

    states: dict[int, dict]
    invalid: dict[int, str]


def read_states(
    conn, wh: Warehouse, end: datetime, min_requests: int, billers: Iterable[int] | None = None
) -> Objectives:
    """Every biller's objectives (of ``billers``, if given) judged at ``end``; none before the
    warehouse has its BillerObjective table (a warehouse no run has written yet)."""
    return read_states_at(conn, wh, [end], min_requests, billers)[end]


def read_states_at(
    conn,
    wh: Warehouse,
    ends: Iterable[datetime],
    min_requests: int,
    billers: Iterable[int] | None = None,
) -> dict[datetime, Objectives]:
    """:func:`read_states` at each of ``ends`` (a run's hours), the objectives read once: a
    warehouse where no biller has one costs one query, not one per hour."""
    objectives, invalid = {}, {}
    table = wh.objectives
    ends = sorted(set(ends))
    if not inspect(conn).has_table(table.name, schema=table.schema):
        return {end: Objectives({}, {}) for end in ends}
    wanted = None if billers is None else set(billers)
    for row in conn.execute(objectives_query(wh.objectives)).mappings():
        if wanted is not None and row["BillerId"] not in wanted:
            continue
        found = from_row(row)
        if isinstance(found, InvalidObjective):
            invalid[int(row["BillerId"])] = str(found)
        else:
            objectives[found.biller_id] = found
    return {end: _states(conn, wh, objectives, invalid, end, min_requests) for end in ends}


def _states(conn, wh: Warehouse, objectives, invalid, end: datetime, min_requests: int):
    ids = sorted(objectives)
    sums: dict[int, dict[str, dict]] = {b: {} for b in ids}
    p95s: dict[int, dict] = {b: {} for b in ids}
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        for kind in RATE_KINDS:
            query = window_sums_query(
                wh.table(kind.aggregate), kind.bad_column, chunk, end, WINDOW_HOURS
            )
            for r in conn.execute(query).mappings():
                sums[r["BillerId"]][kind.key] = {
                    h: (
                        int(r[f"requests_{h}h"] or 0),
                        int(r[f"bad_{h}h"] or 0),
                        int(r[f"hours_{h}h"] or 0),
                    )
                    for h in WINDOW_HOURS
                }
        query = hourly_p95_query(
            wh.table(RESPONSE_TIME), chunk, end - HOURLY.length * P95_HOURS, end
        )
        for r in conn.execute(query).mappings():
            p95 = None if r["P95ResponseTime"] is None else float(r["P95ResponseTime"])
            p95s[r["BillerId"]][as_naive_utc(r["StartTime"])] = (
                int(r["ResponseTimeCount"] or 0),
                p95,
            )
    states = {b: biller_state(objectives[b], sums[b], p95s[b], end, min_requests) for b in ids}
    return Objectives(states, dict(invalid))


def check_verdict(found: Objectives, enabled: Mapping[int, str | None], end: datetime) -> dict:
    """passed / severity / description / metadata of the ``objectives`` check for one hour:
    fails when a biller burns an objective (ERROR if one pages), naming each biller and why;
    billers without objectives, and invalid rows, are listed, never failed."""
    burning = {b: s for b, s in found.states.items() if s["severity"]}

    def name(b: int) -> str:
        return f"{b} ({enabled[b]})" if enabled.get(b) else str(b)

    worst = "ERROR" if any(s["severity"] == "ERROR" for s in burning.values()) else "WARN"
    judged = len(found.states)
    if burning:
        description = (
            f"{len(burning)} of {judged} billers with objectives burning at {end:%Y-%m-%d %H:00}: "
            + ", ".join(f"{name(b)} {s['state']}" for b, s in sorted(burning.items()))
        )
    else:
        description = f"none of {judged} billers with objectives burning at {end:%Y-%m-%d %H:00}"
    return {
        "passed": not burning,
        "severity": worst,
        "description": description,
        "metadata": {
            "evaluated_at": end.isoformat(),
            "billers_with_objectives": judged,
            "burning_billers": {
                str(b): f"{name(b)}: {s['why']}" for b, s in sorted(burning.items())
            },
            "biller_severity": {str(b): s["severity"] for b, s in sorted(burning.items())},
            "not_enough_traffic": [
                str(b)
                for b, s in sorted(found.states.items())
                if s["state"] == "not enough traffic"
            ],
            "without_objective": [
                str(b) for b in sorted(set(enabled) - set(found.states) - set(found.invalid))
            ],
            "invalid_objectives": {str(b): why for b, why in sorted(found.invalid.items())},
            "billers": {str(b): _summary(s) for b, s in sorted(found.states.items())},
        },
    }


def _summary(state: dict) -> dict:
    """A biller's state in the check's metadata: burn rates, budget left, state and why."""
    out: dict = {"state": state["state"], "why": state["why"]}
    for kind in RATE_KINDS:
        rate = state[kind.key]
        if rate is not None:
            out[kind.key] = {
                "budgetRemaining": rate["budgetRemaining"],
                "burn": {
                    f"{a['name']}": {
                        "long": a["longBurn"],
                        "short": a["shortBurn"],
                        "gated": a["gated"],
                    }
                    for a in rate["alerts"]
                },
                "state": rate["state"],
            }
    if state["p95"] is not None:
        out["p95"] = {k: state["p95"][k] for k in ("p95Ms", "objectiveMs", "hoursOver", "state")}
    return out


def write_objectives(warehouse: "WarehouseResource", objectives: Iterable[BillerObjective]) -> int:
    """Insert or replace these billers' objectives, in one transaction (validated
    :class:`~metrics_pipeline.datapump.objectives.BillerObjective` values only)."""
    warehouse.ensure_schema()
    rows = [o.as_row(utc_second()) for o in objectives]
    table = warehouse.tables.objectives
    ids = [r["BillerId"] for r in rows]
    try:
        with warehouse.engine().begin() as conn:
            for i in range(0, len(ids), 500):
                conn.execute(delete(table).where(table.c.BillerId.in_(ids[i : i + 500])))
            if rows:
                conn.execute(insert(table), rows)
    except OperationalError as exc:
        raise warehouse.unreachable(exc) from exc
    return len(rows)


def objective_states(
    warehouse: "WarehouseResource",
    ends: Iterable[datetime],
    min_requests: int,
    billers: Iterable[int] | None = None,
) -> dict[datetime, Objectives]:
    """Every biller's objectives judged at each of ``ends`` (:func:`~metrics_pipeline.
    objectives.read_states_at`)."""
    warehouse.ensure_schema()
    try:
        with warehouse.engine().connect() as conn:
            return read_states_at(conn, warehouse.tables, ends, min_requests, billers)
    except OperationalError as exc:
        raise warehouse.unreachable(exc) from exc
