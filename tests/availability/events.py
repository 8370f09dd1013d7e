"""Test events: every edge case of the rules, plus seeded random traffic, written as the files of
hour folders (JSON Lines, gzip, Parquet)."""

import gzip
import json
import random
from datetime import datetime, timedelta
from pathlib import Path

from metrics_pipeline.availability.demo import write_parquet_events

OMS = {"GetQuote", "PlaceOrder"}
SCENARIOS = ["Checkout", "Search", "Login"]


def base(hour: datetime, second: int = 5, **fields) -> dict:
    event = {
        "time": (hour + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data_baseType": "Ms.Qos.IncomingServiceRequest",
        "cloudEnvironment": "prod",
        "cC": {"ms.b.tel.scenario": "Checkout", "ms.b.tel.partner": "P1"},
        "RequestType": "GET",
        "Latency": 10,
        "RequestStatus": 0,
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not ...}


def edge_cases(hour: datetime) -> list[dict]:
    """One or a few events per rule branch; ``...`` removes a field."""
    h = hour
    out = [
        base(h, eventId="e1"),
        base(h, eventId="e1"),  # duplicate id
        base(h, eventId="e2", RequestStatus=9),  # duplicate id, different content: first kept
        base(h, eventId="e2", RequestStatus=1),
        base(h, 7, RequestStatus=2),  # whole-record duplicates without an id
        base(h, 7, RequestStatus=2),
        base(h, 7, eventId="", RequestStatus=2),  # empty id counts as none: same record
        base(h, data_baseType="incomingservicerequest"),
        base(h, data_baseType="MS.QOS.INCOMINGSERVICEREQUEST"),
        base(h, data_baseType="OutgoingServiceRequest"),
        base(h, data_baseType=...),
        base(h, data_baseType=5),
    ]
    for env in [
        "",
        None,
        ...,
        "dev",
        "DEV",
        "int",
        "ppe",
        "non-prod",
        "nonprod",
        "sandbox",
        "perf",
        "test",
        "eu-dev",
        "x-int-y",
        "a-ppe",
        "b-sandbox",
        "c-perf",
        "d-test",
        "prod-test",
        "nonprod-eu",
        "non-prod-us",
        "prod",
        "Production",
        "staging",
        "PROD-PERF",
        "development",
        "integration",
        7,
    ]:
        out.append(base(h, 11, cloudEnvironment=env, STID=f"env:{env!r}"))
    for header, quote, test in [
        (None, None, None),
        ("", "", ""),
        ("x", None, None),
        (None, "true", None),
        (None, "TRUE", None),
        (None, True, None),
        (None, None, "True"),
        (None, None, True),
        (None, "false", "no"),
        (False, None, None),
        (None, "yes", "1"),
        (None, {"a": 1}, None),
    ]:
        out.append(
            base(
                h,
                13,
                testHeader=header,
                quoteIsTest=quote,
                isTest=test,
                STID=f"test:{header!r}{quote!r}{test!r}",
            )
        )
    scen = [
        (
            {"ms.b.tel.scenario": "Search", "ms.b.tel.partner": "P2"},
            "Login",
            "PX",
            "GetQuote",
            "C1",
        ),
        ({"ms.b.tel.scenario": "", "ms.b.tel.partner": ""}, "Login", "P3", "GetQuote", "C1"),
        (None, "Login", None, "GetQuote", "C2"),
        (..., None, None, "GetQuote", "C3"),
        ({}, "", "", "PlaceOrder", None),
        ("not an object", None, None, "GetQuote", "C4"),
        ([1, 2], None, None, "NotOms", "C5"),
        (None, None, None, None, None),
        (None, "", "", "", ""),
        ({"ms.b.tel.scenario": 42, "ms.b.tel.partner": 7}, None, None, None, None),
        ({"ms.b.tel.scenario": "Unknown-Scn"}, None, "P9", None, None),
        ({"other": 1}, None, None, "getquote", "C6"),  # OmsOperation match is exact
        (None, "S" * 250, "P" * 250, None, None),
    ]
    for i, (cc, sc, sp, op, caller) in enumerate(scen):
        out.append(
            base(
                h,
                17,
                cC=cc,
                ScScenario=sc,
                ScPartner=sp,
                OperationName=op,
                CallerName=caller,
                STID=f"scen{i}",
            )
        )
    for status in [
        0,
        4,
        5,
        6,
        500,
        -1,
        "3",
        "04",
        "0004",
        "5",
        "",
        None,
        ...,
        "3.0",
        3.0,
        "abc",
        " 3",
        "+3",
        99999999999999999999,
        -99999999999999999999,
        True,
        "1e0",
    ]:
        out.append(base(h, 19, RequestStatus=status, STID=f"status:{status!r}"))
    for lat in [
        0,
        0.0,
        12.5,
        "12.5",
        -1,
        -0.0004,
        "fast",
        None,
        ...,
        1e308,
        "1e400",
        "NaN",
        "Infinity",
        "1e3",
        "0.0005",
        "0.0015",
        2.0004999,
        "007",
        " 5",
        "1_0",
        999999999999999.9996,
        123456.7891,
        {"v": 1},
        True,
    ]:
        out.append(base(h, 23, Latency=lat, STID=f"lat:{lat!r}"))
    out += [
        base(
            h,
            29,
            time=(h + timedelta(minutes=59, seconds=59, microseconds=999000)).isoformat() + "Z",
        ),
        base(h, 29, time=(h + timedelta(hours=1)).isoformat() + "Z"),  # next hour: outside
        base(h, 29, time=(h - timedelta(seconds=1)).isoformat() + "Z"),
        base(h, 29, time=(h + timedelta(hours=2, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S+02:00")),
        base(h, 29, time=(h + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S")),
        base(h, 29, time="not a time"),
        base(h, 29, time=None),
        base(h, 29, RequestType=None, STID=None, cloudEnvironment=None),
        base(h, 29, RequestType="R" * 150),
    ]
    return out


def random_events(hour: datetime, n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    events = []
    for _i in range(n):
        level = rnd.random()
        cc = {
            "ms.b.tel.scenario": rnd.choice(SCENARIOS + ["Ghost"]),
            "ms.b.tel.partner": f"P{rnd.randint(1, 4)}",
        }
        event = {
            "eventId": f"r{seed}-{rnd.randint(0, n)}" if rnd.random() < 0.9 else None,
            "time": (hour + timedelta(seconds=rnd.uniform(0, 3600))).isoformat(
                timespec="milliseconds"
            )
            + "Z",
            "data_baseType": rnd.choice(
                ["Ms.Qos.IncomingServiceRequest"] * 8 + ["IncomingServiceRequest", "Other"]
            ),
            "cloudEnvironment": rnd.choice(
                ["prod", "prod", "", "prod-eu", "int", "nonprod-eu", "prod-test"]
            ),
            "cC": cc if level < 0.6 else None,
            "ScScenario": rnd.choice(SCENARIOS) if 0.6 <= level < 0.8 else None,
            "ScPartner": f"S{rnd.randint(1, 3)}" if rnd.random() < 0.5 else None,
            "OperationName": rnd.choice(sorted(OMS) + ["Other"]),
            "CallerName": rnd.choice(["C1", "C2", None]),
            "RequestType": rnd.choice(["GET", "POST"]),
            "Latency": rnd.choice([round(rnd.expovariate(1 / 80), 3), rnd.randint(1, 400), None]),
            "RequestStatus": rnd.choice([0, 0, 0, 1, 2, 5, 7, None]),
            "isTest": rnd.choice([None, None, None, "true", "false"]),
            "STID": rnd.choice(["", "st1"]),
        }
        events.append(event)
    return events


def hour_folder(root: Path, hour: datetime) -> Path:
    folder = root / f"{hour:%Y/%m/%d/%H}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_jsonl(path: Path, events: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")
    return path


def write_parquet(path: Path, events: list[dict]) -> Path:
    """Well-typed events (as a real Parquet writer would produce them), through DuckDB."""
    write_parquet_events(path, events)
    return path
