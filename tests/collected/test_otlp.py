"""OTLP/HTTP ingestion: the pure translation, the route against the real bus, and the real
OpenTelemetry Python SDK's OTLP HTTP exporter pushing to a collector process."""

import asyncio
import gzip
import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from sqlalchemy import select

from metrics_pipeline.collected import otlp
from metrics_pipeline.collected.consumer import consume
from metrics_pipeline.collected.rules import BadPoint

from .conftest import sqlite_store
from .test_collector import running

NOW = datetime(2026, 12, 2, 12, 30)
DAY = timedelta(days=1)
NS = 1_000_000_000


def nanos(when: datetime) -> int:
    return int((when - datetime(1970, 1, 1)).total_seconds()) * NS + when.microsecond * 1000


def attrs(**values) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in values.items()]


def request_of(app: str | None, *metrics: pb.Metric) -> ExportMetricsServiceRequest:
    resource = {"attributes": attrs(**{"service.name": app})} if app else {}
    return ExportMetricsServiceRequest(
        resource_metrics=[
            pb.ResourceMetrics(resource=resource, scope_metrics=[pb.ScopeMetrics(metrics=metrics)])
        ]
    )


def gauge(name, *values, unit="", when=NOW, **labels) -> pb.Metric:
    points = [
        pb.NumberDataPoint(
            time_unix_nano=nanos(when + timedelta(seconds=i)),
            as_double=v,
            attributes=attrs(**labels),
        )
        for i, v in enumerate(values)
    ]
    return pb.Metric(name=name, unit=unit, gauge=pb.Gauge(data_points=points))


@pytest.mark.parametrize(
    "name, unit, key",
    [
        ("response_time", "", "response_time"),
        ("response_time", "ms", "response_time_ms"),
        ("response_time_ms", "ms", "response_time_ms"),
        ("http.server.duration", "s", "http.server.duration_s"),
        ("requests", "{request}", "requests"),
        ("ratio", "1", "ratio"),
        ("cpu", "%", "cpu_percent"),
        ("net", "By/s", "net_By_per_s"),
        ("a/b:c", "", "a_b_c"),
    ],
)
def test_metric_key(name, unit, key):
    assert otlp.metric_key(name, unit) == key


def test_gauges_sums_and_histograms_become_points():
    counter = pb.Metric(
        name="calls",
        sum=pb.Sum(
            aggregation_temporality=pb.AGGREGATION_TEMPORALITY_CUMULATIVE,
            is_monotonic=True,
            data_points=[pb.NumberDataPoint(time_unix_nano=nanos(NOW), as_int=7)],
        ),
    )
    hist = pb.Metric(
        name="latency",
        unit="ms",
        histogram=pb.Histogram(
            data_points=[
                pb.HistogramDataPoint(
                    time_unix_nano=nanos(NOW),
                    count=3,
                    sum=30.0,
                    min=5.0,
                    max=15.0,
                    bucket_counts=[1, 2],
                    explicit_bounds=[10.0],
                    exemplars=[pb.Exemplar(as_double=5.0), pb.Exemplar(as_double=15.0)],
                ),
                pb.HistogramDataPoint(time_unix_nano=nanos(NOW), count=0),
            ]
        ),
    )
    summary = pb.Metric(
        name="old", summary=pb.Summary(data_points=[pb.SummaryDataPoint(count=1, sum=2.0)])
    )
    out = otlp.translate(
        request_of("web", gauge("rt", 1.5, 2.5, host="a"), counter, hist, summary),
        NOW,
        DAY,
        DAY,
    )
    got = [(i.app, i.time, i.metrics) for i in out.items]
    assert got == [
        ("web", NOW, {"rt": 1.5}),
        ("web", NOW + timedelta(seconds=1), {"rt": 2.5}),
        ("web", NOW, {"calls": 7.0}),
        (
            "web",
            NOW,
            {
                "latency_ms.count": 3.0,
                "latency_ms.sum": 30.0,
                "latency_ms.min": 5.0,
                "latency_ms.max": 15.0,
            },
        ),
        ("web", NOW, {"latency_ms.count": 0.0}),
    ]
    assert (out.rejected, out.exemplars, out.points) == (1, 2, 8)
    assert out.message() == "1 data points rejected: summary is not supported; 2 exemplars ignored"


def test_ids_are_stable_per_point_and_distinct_per_series():
    one = otlp.translate(request_of("web", gauge("rt", 1.0, host="a")), NOW, DAY, DAY)
    again = otlp.translate(request_of("web", gauge("rt", 1.0, host="a")), NOW, DAY, DAY)
    other = otlp.translate(request_of("web", gauge("rt", 1.0, host="b")), NOW, DAY, DAY)
    assert one.items[0].id == again.items[0].id != other.items[0].id


def test_bad_points_are_rejected_not_the_request():
    old = gauge("rt", 1.0, when=NOW - 2 * DAY)
    huge = gauge("rt", 1e300)
    long_name = gauge("x" * 101, 1.0)
    no_value = pb.Metric(
        name="rt", gauge=pb.Gauge(data_points=[pb.NumberDataPoint(time_unix_nano=nanos(NOW))])
    )
    out = otlp.translate(
        request_of(None, old, huge, long_name, no_value, gauge("ok", 2.0)), NOW, DAY, DAY
    )
    assert [(i.app, i.metrics) for i in out.items] == [("unknown_service", {"ok": 2.0})]
    assert out.rejected == 4
    assert "time too far from now" in out.message()


def test_service_name_is_cleaned_to_an_app():
    out = otlp.translate(request_of("unknown_service:python", gauge("k", 1.0)), NOW, DAY, DAY)
    assert out.items[0].app == "unknown_service_python"


def test_decompress_and_parse():
    body = request_of("web", gauge("rt", 1.0)).SerializeToString()
    assert otlp.decompress(gzip.compress(body), "gzip", 10_000) == body
    assert otlp.decompress(body, None, 10_000) == body
    with pytest.raises(OverflowError, match="decompressed"):
        otlp.decompress(gzip.compress(b"\0" * 100_000), "gzip", 10_000)
    with pytest.raises(BadPoint, match="gzip"):
        otlp.decompress(b"not gzip", "gzip", 10_000)
    with pytest.raises(BadPoint, match="Content-Encoding"):
        otlp.decompress(body, "br", 10_000)
    with pytest.raises(BadPoint, match="^body: not an OTLP protobuf"):
        otlp.parse_request(b"\xff\xff\xff", otlp.PROTOBUF)
    with pytest.raises(BadPoint, match="^body: not an OTLP OTLP/JSON"):
        otlp.parse_request(b"{not json", otlp.JSON)
    as_json = json_format.MessageToJson(request_of("web", gauge("rt", 1.0))).encode()
    assert otlp.parse_request(as_json, otlp.JSON) == request_of("web", gauge("rt", 1.0))


def test_answers_are_otlp_messages():
    status = Status.FromString(otlp.status_body(429, "the bus is full", otlp.PROTOBUF))
    assert (status.code, status.message) == (8, "the bus is full")
    assert json.loads(otlp.status_body(400, "body: bad", otlp.JSON)) == {
        "code": 3,
        "message": "body: bad",
    }
    empty = otlp.Translation()
    assert otlp.response_body(empty, otlp.PROTOBUF) == b""
    assert json.loads(otlp.response_body(empty, otlp.JSON)) == {}
    partial = otlp.Translation(rejected=2, reasons={"time too far from now": 2})
    answer = ExportMetricsServiceResponse.FromString(otlp.response_body(partial, otlp.PROTOBUF))
    assert answer.partial_success.rejected_data_points == 2
    assert json.loads(otlp.response_body(partial, otlp.JSON))["partialSuccess"] == {
        "rejectedDataPoints": "2",
        "errorMessage": "2 data points rejected: time too far from now",
    }


# --- the route, against the real bus -------------------------------------------------------------


def now_request(app="web", *values, **labels):
    from metrics_pipeline.clock import utc_now

    return request_of(app, gauge("rt", *values, when=utc_now(), **labels))


def stored(store):
    with store.engine.connect() as conn:
        t = store.t.raw.c
        return sorted(
            (r.App, r.MetricKey, r.Value) for r in conn.execute(select(t.App, t.MetricKey, t.Value))
        )


pb_headers = {"Content-Type": otlp.PROTOBUF}


@pytest.mark.nats
def test_protobuf_json_and_gzip_are_stored_once(bus_settings, tmp_path):
    store = sqlite_store(tmp_path)
    with running(bus_settings) as c:
        body = now_request("web", 1.0, 2.0).SerializeToString()
        r = c.post("/v1/metrics", content=body, headers=pb_headers)
        assert r.status_code == 200 and r.headers["content-type"] == otlp.PROTOBUF
        assert r.content == b""  # everything taken: no partial_success
        # The exporter's retry of the same request: stored once.
        assert c.post("/v1/metrics", content=body, headers=pb_headers).status_code == 200
        zipped = gzip.compress(now_request("api", 3.0).SerializeToString())
        r = c.post(
            "/v1/metrics", content=zipped, headers={**pb_headers, "Content-Encoding": "gzip"}
        )
        assert r.status_code == 200
        as_json = json_format.MessageToJson(now_request("json", 4.0))
        r = c.post("/v1/metrics", content=as_json, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json() == {}
        summary = pb.Metric(name="s", summary=pb.Summary(data_points=[pb.SummaryDataPoint()]))
        r = c.post(
            "/v1/metrics",
            content=request_of("web", summary).SerializeToString(),
            headers=pb_headers,
        )
        answer = ExportMetricsServiceResponse.FromString(r.content)
        assert r.status_code == 200 and answer.partial_success.rejected_data_points == 1
    asyncio.run(consume(bus_settings, store, once=True))
    assert stored(store) == [
        ("api", "rt", 3.0),
        ("json", "rt", 4.0),
        ("web", "rt", 1.0),
        ("web", "rt", 2.0),
    ]


@pytest.mark.nats
def test_errors_are_statuses_with_the_collect_rules(bus_settings):
    settings = replace(bus_settings, max_body_bytes=3000, max_points=10, stream_max_msgs=1)
    with running(settings) as c:
        r = c.post("/v1/metrics", content=b"x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        r = c.post("/v1/metrics", content=b"\xff\xff\xff", headers=pb_headers)
        assert r.status_code == 400 and Status.FromString(r.content).code == 3
        r = c.post("/v1/metrics", content=b"{", headers={"Content-Type": otlp.JSON})
        assert r.status_code == 400 and r.json()["message"].startswith("body: not an OTLP")
        many = now_request("web", *range(11)).SerializeToString()
        r = c.post("/v1/metrics", content=many, headers=pb_headers)
        assert (
            r.status_code == 413
            and "more than 10 data points" in Status.FromString(r.content).message
        )
        bomb = gzip.compress(b"\0" * 10_000)
        r = c.post("/v1/metrics", content=bomb, headers={**pb_headers, "Content-Encoding": "gzip"})
        assert r.status_code == 413
        ok = c.post(
            "/v1/metrics", content=now_request("a", 1.0).SerializeToString(), headers=pb_headers
        )
        assert ok.status_code == 200
        full = c.post(
            "/v1/metrics", content=now_request("a", 2.0).SerializeToString(), headers=pb_headers
        )
        assert full.status_code == 429 and full.headers["Retry-After"] == "2"
        assert Status.FromString(full.content).code == 8


@pytest.mark.nats
def test_a_request_beyond_one_bus_message_is_split(bus_settings, tmp_path):
    """10,000 points encode to more than NATS's 1 MB message: several messages, all stored."""
    store = sqlite_store(tmp_path)
    from metrics_pipeline.clock import utc_now

    start = utc_now() - timedelta(hours=1)
    points = [
        pb.NumberDataPoint(time_unix_nano=nanos(start + timedelta(milliseconds=i)), as_double=i)
        for i in range(10_000)
    ]
    body = request_of("web", pb.Metric(name="k", gauge=pb.Gauge(data_points=points)))
    with running(bus_settings) as c:
        r = c.post("/v1/metrics", content=body.SerializeToString(), headers=pb_headers)
        assert r.status_code == 200, r.content
    result = asyncio.run(consume(bus_settings, store, once=True))
    assert result.messages > 1 and result.inserted == 10_000


# --- the real OpenTelemetry SDK -------------------------------------------------------------------


def exported_points(sent) -> list[tuple]:
    """(app, key, time, value) of every point in the SDK's MetricsData, computed here from the
    SDK's own objects (not from the protobuf the exporter sent)."""
    out = []
    for data in sent:
        for rm in data.resource_metrics:
            app = rm.resource.attributes["service.name"]
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    key = f"{metric.name}_{metric.unit}" if metric.unit else metric.name
                    for p in metric.data.data_points:
                        when = datetime(1970, 1, 1) + timedelta(
                            microseconds=p.time_unix_nano // 1000
                        )
                        if hasattr(p, "bucket_counts"):
                            values = {"count": p.count, "sum": p.sum, "min": p.min, "max": p.max}
                            out += [(app, f"{key}.{n}", when, float(v)) for n, v in values.items()]
                        else:
                            out.append((app, key, when, float(p.value)))
    return sorted(out)


def sdk_provider(app: str, url: str, sink: list):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    class RecordingExporter(OTLPMetricExporter):
        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            result = super().export(metrics_data, timeout_millis, **kwargs)
            if result == MetricExportResult.SUCCESS:
                sink.append(metrics_data)
            return result

    reader = PeriodicExportingMetricReader(
        RecordingExporter(endpoint=f"{url}/v1/metrics"), export_interval_millis=3_600_000
    )
    return MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": app}))


@pytest.mark.nats
def test_the_sdk_exporter_stores_every_point_once_across_a_consumer_restart(bus_settings, tmp_path):
    import signal

    from metrics_pipeline.collected.store import CollectedStore
    from metrics_pipeline.resources.engines import create_db_engine

    from .processes import CollectorProcess, drain, family_env, start_consumer

    url = f"sqlite:///{tmp_path / 'w.db'}"
    env = family_env(bus_settings, url, METRICS_CONSUMER_ACK_WAIT_S="2")
    collector = CollectorProcess(env, tmp_path / "collector.log").wait_ready(60)
    log = tmp_path / "consumer.log"
    consumer = start_consumer(env, log, "--metrics-port", "0")
    sent: list = []
    providers = {app: sdk_provider(app, collector.url, sent) for app in ("web", "billing")}
    instruments = {
        app: (
            p.get_meter("test").create_gauge("response_time", unit="ms"),
            p.get_meter("test").create_counter("requests"),
            p.get_meter("test").create_histogram("payload", unit="By"),
        )
        for app, p in providers.items()
    }
    try:
        for round_ in range(10):
            if round_ == 4:  # the consumer stops during the export...
                consumer.send_signal(signal.SIGTERM)
                consumer.wait(30)  # killed while starting, or stopped cleanly
            if round_ == 7:  # ... and is restarted
                consumer = start_consumer(env, log, "--metrics-port", "0")
            for i, (app, (rt, calls, size)) in enumerate(instruments.items()):
                rt.set(10.0 * round_ + i + 0.25, {"route": "/a"})
                rt.set(5.0 * round_ + i, {"route": "/b"})
                calls.add(round_ + 1)
                size.record(100 + round_)
                size.record(300 + i)
                assert providers[app].force_flush()
    finally:
        for p in providers.values():
            p.shutdown()
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
        collector.stop()
    drain(env, log)
    expected = exported_points(sent)
    # 20 flushes, and the cumulative counter and histogram once more at shutdown.
    assert len(sent) >= 20 and len(expected) >= 20 * (2 + 1 + 4)
    store = CollectedStore(create_db_engine(url, "warehouse"))
    with store.engine.connect() as conn:
        t = store.t.raw.c
        rows = conn.execute(select(t.App, t.MetricKey, t.CollectedAt, t.Value)).all()
    assert sorted(tuple(r) for r in rows) == expected
    # Hourly statistics per app, and of all apps, equal those of what the SDK exported.
    from metrics_pipeline.collected.rules import hour_start, hour_stats

    groups: dict = {}
    for app, key, when, value in expected:
        for who in (app, None):
            groups.setdefault((who, key, hour_start(when)), []).append(value)
    store.write_hours({start for _, _, start in groups})
    for (app, key, start), values in groups.items():
        got, want = store.hour_stats(key, start, app=app), hour_stats(values)
        assert got.count == want.count and (got.p95, got.p99) == (want.p95, want.p99)
        assert got.average == pytest.approx(want.average, rel=1e-12)
        assert got.median == pytest.approx(want.median, rel=1e-12)
    store.engine.dispose()


SNIPPET_IMPORTS = """
from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
"""


@pytest.mark.nats
def test_the_readme_snippet_sends_to_the_collector(bus_settings, tmp_path):
    """The three lines of the README's "Sending from an OpenTelemetry SDK", run as written."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from .processes import CollectorProcess, drain, family_env

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Sending from an OpenTelemetry SDK") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 3
    url = f"sqlite:///{tmp_path / 'w.db'}"
    env = family_env(bus_settings, url)
    collector = CollectorProcess(env, tmp_path / "collector.log").wait_ready(60)
    try:
        code = SNIPPET_IMPORTS + snippet.replace("http://localhost:8100", collector.url)
        code += "assert metrics.get_meter_provider().force_flush()\n"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    finally:
        collector.stop()
    drain(env, tmp_path / "consumer.log")
    from metrics_pipeline.collected.store import CollectedStore
    from metrics_pipeline.resources.engines import create_db_engine

    store = CollectedStore(create_db_engine(url, "warehouse"))
    # force_flush and the provider's shutdown at exit each export the gauge's last value.
    assert set(stored(store)) == {("web", "response_time_ms", 120.5)}
    store.engine.dispose()
