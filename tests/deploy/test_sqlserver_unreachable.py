"""The SQL Server path through pyodbc and the ODBC driver the project installs
(scripts/system-deps.sh: unixODBC + FreeTDS here; Microsoft's driver in the image): a shard that
does not answer is a typed ShardUnreachable within the connect timeout, and a run over it fails
cleanly naming the shard. Every endpoint is on loopback (no SQL Server can run here)."""

import socket
import time
from collections.abc import Iterator
from datetime import timedelta

import pyodbc
import pytest
from dagster import DagsterInstance, Failure

from metrics_pipeline.datapump.shards import ShardsResource
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.resources.engines import ShardUnreachable

from .conftest import DEMO_HOUR, free_port

DRIVER = "FreeTDS"  # the name Debian's tdsodbc registers (odbcinst -q -d)
TIMEOUT_S = 2
#: Login timeout plus generous slack for a loaded 2-core machine.
WITHIN_S = TIMEOUT_S + 8
PASSWORD = "s3cret-pw"


def shard_template(port: int) -> str:
    return (
        f"mssql+pyodbc://sa:{PASSWORD}@127.0.0.1:{port}/{{shard}}?driver={DRIVER}&TDS_Version=7.4"
    )


@pytest.fixture(scope="module", autouse=True)
def odbc_driver() -> None:
    assert DRIVER in pyodbc.drivers(), (
        f"ODBC driver {DRIVER!r} is not registered (found {pyodbc.drivers()}); "
        "scripts/system-deps.sh installs unixodbc and tdsodbc"
    )


@pytest.fixture
def closed_port() -> int:
    """Nothing listens: the connection is refused at once."""
    return free_port()


@pytest.fixture
def blackholed_port() -> Iterator[int]:
    """A port whose SYNs are dropped, like a blackholed address: a listener that never accepts
    and whose accept queue is full, so the kernel ignores new connection attempts."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(1.0)
    try:
        with pytest.raises(TimeoutError):
            probe.connect(("127.0.0.1", port))
    finally:
        probe.close()
    yield port
    for s in (*fillers, listener):
        s.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts TCP but never answers the TDS login (a hung SQL Server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


ENDPOINTS = ["closed_port", "blackholed_port", "silent_port"]
START = DEMO_HOUR
END = DEMO_HOUR + timedelta(hours=1)


def assert_unreachable(call, shard: str) -> ShardUnreachable:
    started = time.monotonic()
    with pytest.raises(ShardUnreachable) as caught:
        call()
    assert time.monotonic() - started < WITHIN_S
    exc = caught.value
    assert exc.what == f"shard {shard}"
    assert f"/{shard}" in exc.url and PASSWORD not in str(exc)
    assert exc.reason  # the driver's own first line, e.g. "[08S01] ... Unable to connect"
    return exc


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_read_hourly_raises_shard_unreachable(endpoint, request):
    port = request.getfixturevalue(endpoint)
    shards = ShardsResource(url_template=shard_template(port), connect_timeout_s=TIMEOUT_S)
    assert_unreachable(
        lambda: list(shards.read_hourly("shard_east", [101], START, END)), "shard_east"
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_busy_billers_raises_shard_unreachable(endpoint, request):
    port = request.getfixturevalue(endpoint)
    shards = ShardsResource(url_template=shard_template(port), connect_timeout_s=TIMEOUT_S)
    assert_unreachable(lambda: shards.busy_billers("shard_west", [103]), "shard_west")


def test_a_run_over_an_unreachable_shard_fails_naming_the_shard(demo_env, closed_port, monkeypatch):
    env = {**demo_env, "METRICS_SHARD_URL_TEMPLATE": shard_template(closed_port)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    job = build_definitions(env).resolve_job_def("hourly_job")
    hour = START.strftime("%Y-%m-%d-%H:%M")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=hour,
            tags={"metrics/billers": "101"},
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error.cls_name == Failure.__name__, error.to_string()
    assert "shard shard_east unreachable" in error.message
    metadata = failure.step_failure_data.user_failure_data.metadata
    assert metadata["unreachable_shards"].value == ["shard_east"]
    assert metadata["failed_billers"].value == [101]
