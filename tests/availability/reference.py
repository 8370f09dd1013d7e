"""An independent computation of seed 001's availability rules in plain Python.

Shares no code with metrics_pipeline.availability: it re-reads the rules from the issue text and
works on the events as Python objects (parsed with the json module, numbers kept as their text).
"""

import gzip
import json
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

FIELDS = [
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
]
BAD_ENV = {"dev", "int", "ppe", "non-prod", "nonprod", "sandbox", "perf", "test"}
BAD_ENV_PART = ["-dev", "-int", "-ppe", "-sandbox", "-perf", "-test"]


class Raw(str):
    """A JSON number kept as the text it was written with."""


def as_text(value):
    """A parsed JSON value as the text the rules see."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return repr(value)  # a float or int from a Parquet column


def read_lines(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line, parse_float=Raw, parse_int=Raw) for line in fh if line.strip()]


def read_parquet(path: Path) -> list[dict]:
    """A Parquet file's rows as Python values (floats stay floats, structs become dicts)."""
    import duckdb

    con = duckdb.connect()
    cur = con.execute(f"SELECT * FROM read_parquet('{path}')")
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    con.close()
    return rows


def flatten(event: dict) -> dict:
    rec = {f: as_text(event.get(f)) for f in FIELDS}
    cc = event.get("cC")
    if isinstance(cc, dict):
        rec["cc_s"] = as_text(cc.get("ms.b.tel.scenario"))
        rec["cc_p"] = as_text(cc.get("ms.b.tel.partner"))
    else:
        rec["cc_s"] = rec["cc_p"] = None
    return rec


def blank(v) -> bool:
    return v is None or len(v) == 0


def env_ok(env) -> bool:
    if blank(env):
        return True
    e = env.lower()
    first = e not in BAD_ENV
    for part in (*BAD_ENV_PART, "non-prod", "nonprod"):
        if part in e:
            first = False
    third = ("prod" in e) and ("non-prod" not in e) and ("nonprod" not in e)
    return first or third


def status_ok(s) -> bool:
    if s is None:
        return False
    digits = s[1:] if s.startswith("-") else s
    if not digits or any(ch not in "0123456789" for ch in digits):
        return False
    return int(s) < 5


def good_latency(s):
    if s is None:
        return None
    body = s[1:] if s.startswith("-") else s
    mantissa, _, exponent = body.lower().partition("e")
    whole, dot, frac = mantissa.partition(".")
    if (
        not whole
        or any(c not in "0123456789" for c in whole)
        or (len(whole) > 1 and whole[0] == "0")
    ):
        return None
    if dot and (not frac or any(c not in "0123456789" for c in frac)):
        return None
    if "e" in body.lower():
        exp = exponent[1:] if exponent[:1] in "+-" and exponent else exponent
        if not exp or any(c not in "0123456789" for c in exp):
            return None
    value = float(s)
    if math.isinf(value) or value < 0:
        return None
    try:
        d = Decimal(s).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    except ArithmeticError:
        return None
    if d >= Decimal("1000000000000000"):
        return None
    return d


def parse_time(text):
    try:
        t = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).replace(tzinfo=None)


def sort_key(rec):
    order = ["time"] + [f for f in FIELDS if f not in ("eventId", "time")] + ["cc_s", "cc_p"]
    return tuple((rec[c] is None, rec[c] or "") for c in order)


def compute_hour(records: list[dict], hour: datetime, oms: set[str]) -> dict:
    """Minute rows keyed by (minute, scenario, partner, request type, environment, STID), plus
    the drop counts and the duplicates."""
    groups = defaultdict(list)
    for rec in records:
        eid = rec["eventId"] if not blank(rec["eventId"]) else None
        key = ("id", eid) if eid is not None else ("rec", sort_key(rec))
        groups[key].append(rec)
    unique = [sorted(g, key=sort_key)[0] for g in groups.values()]
    dups = len(records) - len(unique)
    dropped = defaultdict(int)
    rows = {}
    latencies = defaultdict(list)
    for rec in unique:
        t = parse_time(rec["time"])
        if t is None:
            dropped["bad_time"] += 1
            continue
        if not (hour <= t < hour + timedelta(hours=1)):
            dropped["outside_hour"] += 1
            continue
        bt = rec["data_baseType"]
        if bt is None or bt.lower() not in (
            "ms.qos.incomingservicerequest",
            "incomingservicerequest",
        ):
            dropped["base_type"] += 1
            continue
        if not env_ok(rec["cloudEnvironment"]):
            dropped["environment"] += 1
            continue
        qt, it = rec["quoteIsTest"], rec["isTest"]
        if not (
            blank(rec["testHeader"])
            and (blank(qt) or qt.lower() != "true")
            and (blank(it) or it.lower() != "true")
        ):
            dropped["test_traffic"] += 1
            continue
        scenario = None
        for candidate in (rec["cc_s"], rec["ScScenario"]):
            if not blank(candidate):
                scenario = candidate
                break
        if scenario is None and not blank(rec["OperationName"]) and rec["OperationName"] in oms:
            scenario = rec["OperationName"]
        if scenario is None:
            dropped["no_scenario"] += 1
            continue
        partner = ""
        for candidate in (rec["cc_p"], rec["ScPartner"], rec["CallerName"]):
            if not blank(candidate):
                partner = candidate
                break
        key = (
            t.replace(second=0, microsecond=0),
            scenario[:200],
            partner[:200],
            (rec["RequestType"] or "")[:100],
            (rec["cloudEnvironment"] or "")[:100],
            (rec["STID"] or "")[:100],
        )
        row = rows.setdefault(key, [0, 0, 0, Decimal(0)])
        row[0] += 1
        row[1] += 1 if status_ok(rec["RequestStatus"]) else 0
        lat = good_latency(rec["Latency"])
        if lat is not None:
            row[2] += 1
            row[3] += lat
            latencies[scenario[:200]].append(lat)
    return {"rows": rows, "dropped": dict(dropped), "duplicates": dups, "latencies": latencies}


def two(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def minute_table(rows: dict) -> dict:
    """The AvailabilityMinute rows as the test compares them."""
    out = {}
    for key, (total, ok, n, s) in rows.items():
        out[key] = {
            "TotalRequests": total,
            "SuccessfulRequests": ok,
            "FailedRequests": total - ok,
            "LatencyCount": n,
            "TotalLatency": s,
            "AverageLatency": two(s / n) if n else None,
        }
    return out


def daily_table(minute: dict) -> dict:
    out = {}
    for (t, *rest), r in minute.items():
        key = (t.replace(hour=0, minute=0), *rest)
        acc = out.setdefault(key, [0, 0, 0, Decimal(0)])
        acc[0] += r["TotalRequests"]
        acc[1] += r["SuccessfulRequests"]
        acc[2] += r["LatencyCount"]
        acc[3] += r["TotalLatency"]
    return minute_table(out)


def published(minute: dict, known: set[str], level: int) -> dict:
    """Per scenario (known ones only), per hour (level 1) or day (level 2)."""
    acc = {}
    for (t, scenario, *_), r in minute.items():
        if scenario not in known:
            continue
        start = t.replace(minute=0) if level == 1 else t.replace(hour=0, minute=0)
        a = acc.setdefault((scenario, start), [0, 0, 0, Decimal(0)])
        a[0] += r["TotalRequests"]
        a[1] += r["SuccessfulRequests"]
        a[2] += r["LatencyCount"]
        a[3] += r["TotalLatency"]
    out = {}
    for key, (total, ok, n, s) in acc.items():
        out[key] = {
            "TotalRequests": total,
            "SuccessfulRequests": ok,
            "FailedRequests": total - ok,
            "Availability": two(Decimal(100) * ok / total) if total else None,
            "AverageLatency": two(s / n) if n else None,
        }
    return out


def nearest_rank(values: list, p: int):
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(p * len(ordered) / 100)
    return ordered[rank - 1]
