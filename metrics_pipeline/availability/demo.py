"""Demo data for the availability family: two weeks of realistic request telemetry in hour
folders (JSON Lines, gzip and Parquet), and the reference tables."""

import gzip
import json
import random
import tempfile
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from metrics_pipeline.availability import cursor, duckdb_sql
from metrics_pipeline.availability.duckdb_sql import lit

#: (ScenarioId, name, target %, share of traffic, usual failure rate)
SCENARIOS = (
    ("Checkout", "Checkout", 99.9, 0.30, 0.0004),
    ("Search", "Product search", 99.5, 0.30, 0.002),
    ("Login", "Sign-in", 99.95, 0.20, 0.0002),
    ("Payments", "Payment authorization", 99.9, 0.12, 0.0006),
    ("Profile", "Customer profile", 99.0, 0.08, 0.004),
)
PARTNERS = (
    ("contoso", "Contoso Ltd"),
    ("fabrikam", "Fabrikam Inc"),
    ("northwind", "Northwind"),
    ("adventure", "Adventure Works"),
)
#: Operation names that may stand in for a scenario (OmsOperation), and what they stand for.
OMS_OPERATIONS = {"PlaceOrder": "Checkout", "FindProducts": "Search"}
UNKNOWN_SCENARIO = "LegacyExport"
NON_PROD = ("int", "ppe", "eu-dev", "nonprod", "sandbox")
PROD = ("prod", "prod-eu", "prod-us", "")
PARQUET_TYPES = {
    "eventId": "VARCHAR",
    "time": "VARCHAR",
    "data_baseType": "VARCHAR",
    "cloudEnvironment": "VARCHAR",
    "cC": 'STRUCT("ms.b.tel.scenario" VARCHAR, "ms.b.tel.partner" VARCHAR)',
    "ScScenario": "VARCHAR",
    "ScPartner": "VARCHAR",
    "OperationName": "VARCHAR",
    "CallerName": "VARCHAR",
    "RequestType": "VARCHAR",
    "RoleInstance": "VARCHAR",
    "SLLVersion": "VARCHAR",
    "Latency": "DOUBLE",
    "RequestStatus": "BIGINT",
    "testHeader": "VARCHAR",
    "quoteIsTest": "VARCHAR",
    "isTest": "VARCHAR",
    "STID": "VARCHAR",
}


def _incident(scenario: str, hour: datetime, end: datetime) -> float:
    """Extra failure rate: Checkout breaks for two hours two days before the end, and Search
    degrades slowly over the last six hours (a page and a ticket in the demo)."""
    if scenario == "Checkout" and end - timedelta(days=2, hours=2) <= hour < end - timedelta(
        days=2
    ):
        return 0.2
    if scenario == "Search" and hour >= end - timedelta(hours=6):
        return 0.04
    return 0.0


def _event(rnd: random.Random, hour: datetime, end: datetime, n: int) -> dict:
    sid, _name, _t, _s, fail = rnd.choices(SCENARIOS, weights=[s[3] for s in SCENARIOS])[0]
    partner = rnd.choice(PARTNERS)[0]
    t = hour + timedelta(seconds=rnd.uniform(0, 3599.999))
    failed = rnd.random() < fail + _incident(sid, hour, end)
    event = {
        "eventId": f"{hour:%Y%m%d%H}-{n}",
        "time": t.isoformat(timespec="milliseconds") + "Z",
        "data_baseType": rnd.choice(["Ms.Qos.IncomingServiceRequest", "IncomingServiceRequest"]),
        "cloudEnvironment": rnd.choice(PROD),
        "RequestType": rnd.choice(["GET", "GET", "POST"]),
        "RoleInstance": f"{sid.lower()}-{rnd.randint(0, 5)}",
        "Latency": round(rnd.lognormvariate(4.2, 0.6) * (3 if failed else 1), 3),
        "RequestStatus": rnd.choice([5, 6, 7]) if failed else rnd.choice([0, 0, 0, 1, 2]),
        "STID": rnd.choice(["", "", "stamp-1", "stamp-2"]),
    }
    level = rnd.random()
    if level < 0.6:  # SLL >= 5: correlation context
        event["cC"] = {"ms.b.tel.scenario": sid, "ms.b.tel.partner": partner}
        event["SLLVersion"] = "5.2"
    elif level < 0.85:
        event |= {"ScScenario": sid, "ScPartner": partner, "SLLVersion": "4.1"}
    else:  # OperationName from the OMS list, CallerName for the partner
        op = next((o for o, s in OMS_OPERATIONS.items() if s == sid), None)
        event |= {"OperationName": op or "Unlisted", "CallerName": partner, "SLLVersion": "3.0"}
    noise = rnd.random()
    if noise < 0.03:
        event["isTest"] = rnd.choice(["true", "True"])
    elif noise < 0.04:
        event["testHeader"] = "synthetic-probe"
    elif noise < 0.08:
        event["cloudEnvironment"] = rnd.choice(NON_PROD)
    elif noise < 0.10:
        event["cC"] = {"ms.b.tel.scenario": UNKNOWN_SCENARIO, "ms.b.tel.partner": partner}
    elif noise < 0.11:
        event["Latency"] = None
    elif noise < 0.1101:
        event["RequestStatus"] = None  # an empty status counts as a failure
    elif noise < 0.115:
        event["data_baseType"] = "Ms.Qos.OutgoingServiceRequest"
    return event


def _bad_fields(event: dict, rnd: random.Random) -> dict:
    """JSON Lines only: wrong types Parquet could not hold."""
    r = rnd.random()
    if r < 0.3:
        return event | {"Latency": "n/a"}
    if r < 0.6:
        return event | {"RequestStatus": "OK"}
    return event | {"cC": "corrupt"}


def write_hour(root: Path, hour: datetime, end: datetime, count: int, seed: int) -> int:
    """One hour folder: a gzip JSON Lines file and a Parquet file (odd hours: plain JSON Lines),
    with ~2 % duplicates and a few events of wrong types."""
    rnd = random.Random(f"{seed}-{hour:%Y%m%d%H}")
    events = [_event(rnd, hour, end, i) for i in range(count)]
    events += [dict(rnd.choice(events)) for _ in range(count // 50)]  # duplicates (same eventId)
    half = len(events) // 2
    folder = cursor.hour_folder(root, hour)
    folder.mkdir(parents=True, exist_ok=True)
    json_part = [_bad_fields(e, rnd) if rnd.random() < 0.001 else e for e in events[:half]]
    name = "events-a.jsonl.gz" if hour.hour % 2 == 0 else "events-a.jsonl"
    opener = gzip.open if name.endswith(".gz") else open
    with opener(folder / name, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in json_part)
    write_parquet_events(folder / "events-b.parquet", events[half:])
    return len(events)


def write_parquet_events(path: Path, events: list[dict]) -> None:
    """Events as a typed Parquet file (cC a struct, Latency DOUBLE, RequestStatus BIGINT)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as tmp:
        tmp.writelines(json.dumps(e) + "\n" for e in events)
    spec = "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in PARQUET_TYPES.items()) + "}"
    conn = duckdb_sql.connect("256MB")
    try:
        conn.execute(
            f"COPY (SELECT * FROM read_json({lit(tmp.name)}, format = 'newline_delimited', "
            f"columns = {spec})) TO {lit(str(path))} (FORMAT parquet)"
        )
    finally:
        conn.close()
        Path(tmp.name).unlink()


def write_demo_events(
    root: Path, end: datetime, days: int = 14, seed: int = 7, scale: float = 1.0
) -> int:
    """``days`` of hour folders ending at ``end`` (exclusive); a diurnal curve around 600
    events an hour times ``scale``. Returns the number of events written."""
    total = 0
    start = end - timedelta(days=days)
    for hour in cursor.hours(start, end):
        diurnal = 0.5 + 0.5 * abs(12 - hour.hour) / 12
        total += write_hour(root, hour, end, max(1, int(600 * scale * (1.5 - diurnal))), seed)
    return total


def reference_rows() -> tuple[list[dict], list[dict], list[str]]:
    scenarios = [
        {"ScenarioId": sid, "ScenarioName": name, "AvailabilityTarget": target}
        for sid, name, target, _s, _f in SCENARIOS
    ]
    customers = [{"PartnerId": p, "CustomerName": n} for p, n in PARTNERS]
    return scenarios, customers, sorted(OMS_OPERATIONS)


def create_availability_demo(
    environ: Mapping[str, str] | None,
    end: datetime,
    days: int = 14,
    seed: int = 7,
    scale: float = 1.0,
) -> tuple[Path, int]:
    """Write the demo events under METRICS_EVENTS_ROOT (replacing its hour folders in the
    window) and fill the reference tables. Returns (events root, events written)."""
    import shutil

    from metrics_pipeline.availability.pipeline import open_store
    from metrics_pipeline.availability.settings import AvailabilitySettings

    settings = AvailabilitySettings.from_env(environ)
    for hour in cursor.hours(end - timedelta(days=days), end):
        shutil.rmtree(cursor.hour_folder(settings.events_root, hour), ignore_errors=True)
    written = write_demo_events(settings.events_root, end, days, seed, scale)
    store = open_store(environ)
    store.write_reference(*reference_rows())
    store.engine.dispose()
    return settings.events_root, written
