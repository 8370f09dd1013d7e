"""``metrics-pipeline up``: what it starts (a pure plan), and the real thing on a temp data dir
after the demo data exists — the Dagster UI, the dashboard with its graphs' data, a point posted
to the collector answered by the query route — then one SIGINT stops every process it started,
their own children included."""

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from metrics_pipeline.semantics import HOURLY, METRIC_TYPES
from metrics_pipeline.up import Ports, Process, Runner, bus_address, demo_settings, plan

CLI = [sys.executable, "-m", "metrics_pipeline.cli"]
PORTS = Ports("127.0.0.1", 3001, 8001, 8101, 9101)


def names(processes) -> list[str]:
    return [p.name for p in processes]


def test_the_plan_starts_every_component_on_its_port(tmp_path):
    env = {"METRICS_DATA_DIR": str(tmp_path)}
    processes = plan(env, PORTS, python="/venv/bin/python", nats_server="/usr/sbin/nats-server")
    assert names(processes) == ["webserver", "daemon", "api", "collector", "consumer"]
    by = {p.name: p for p in processes}
    assert by["webserver"].argv[0] == "/venv/bin/dagster-webserver"
    assert by["webserver"].argv[-4:] == ("-h", "127.0.0.1", "-p", "3001")
    assert by["daemon"].argv[:2] == ("/venv/bin/dagster-daemon", "run")
    assert by["api"].argv[-5:] == ("api", "--host", "127.0.0.1", "--port", "8001")
    assert by["collector"].argv[-2:] == ("--port", "8101")
    assert by["consumer"].argv[-2:] == ("--metrics-port", "9101")
    # One instance for the webserver and the daemon: DAGSTER_HOME, else in the data dir.
    assert by["daemon"].env["DAGSTER_HOME"] == str(tmp_path.resolve() / "dagster_home")
    home = {**env, "DAGSTER_HOME": str(tmp_path / "h")}
    assert plan(home, PORTS)[0].env["DAGSTER_HOME"] == str(tmp_path / "h")


def test_nats_is_started_only_when_installed_local_and_down(tmp_path):
    env = {"METRICS_DATA_DIR": str(tmp_path), "METRICS_BUS_URL": "nats://127.0.0.1:4333"}
    (nats, *_) = plan(env, PORTS, nats_server="/bin/nats-server", nats_up=False)
    assert nats.name == "nats" and nats.ready == ("127.0.0.1", 4333)
    assert nats.argv[:5] == ("/bin/nats-server", "-a", "127.0.0.1", "-p", "4333")
    assert "-js" in nats.argv and str(tmp_path.resolve() / "nats") in nats.argv
    assert "nats" not in names(plan(env, PORTS, nats_server="/bin/nats-server", nats_up=True))
    assert "nats" not in names(plan(env, PORTS, nats_server=None, nats_up=False))
    remote = {**env, "METRICS_BUS_URL": "nats://bus.example.com:4222"}
    assert "nats" not in names(plan(remote, PORTS, nats_server="/bin/nats-server", nats_up=False))


def test_bus_address_and_demo_settings(tmp_path):
    assert bus_address("nats://u:p@a.example:4333,nats://b:4222") == ("a.example", 4333)
    assert bus_address("nats://localhost") == ("localhost", 4222)
    (tmp_path / "demo.env").write_text("METRICS_PARTITIONS_START=2026-11-29\n")
    env = {"METRICS_DATA_DIR": str(tmp_path)}
    assert demo_settings(env) == {"METRICS_PARTITIONS_START": "2026-11-29"}
    assert demo_settings({**env, "METRICS_PARTITIONS_START": "2025-01-05"}) == {}
    assert demo_settings({"METRICS_DATA_DIR": str(tmp_path / "none")}) == {}


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, budget_s: float = 180):
    deadline = time.monotonic() + budget_s
    while True:
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"up exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {budget_s}s:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.nats
@pytest.mark.slow
def test_up_serves_everything_and_one_sigint_stops_all(tmp_path):
    """With nats-server installed, on a bus port where nothing answers: `up` starts NATS too."""
    data = tmp_path / "data"
    dagster, api, collector, consumer, bus = free_ports(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "DAGSTER_"))}
    env.update(
        {
            "METRICS_DATA_DIR": str(data),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "METRICS_BUS_STREAM": f"UP_{uuid.uuid4().hex[:8].upper()}",
            "METRICS_BUS_CONSUMER": "up-test",
        }
    )
    nats = shutil.which("nats-server")
    if nats is not None:
        # Nothing answers on this port: `up` starts a NATS server of its own there.
        env["METRICS_BUS_URL"] = f"nats://127.0.0.1:{bus}"
    demo = subprocess.run(
        [*CLI, "demo-data", "--days", "1", "--scale", "0.1"], env=env, capture_output=True
    )
    assert demo.returncode == 0, demo.stderr.decode()
    env.update(demo_settings(env))
    materialize = subprocess.run(
        [*CLI, "materialize", "--last-days", "1", "--family", "datapump"],
        env=env,
        capture_output=True,
    )
    assert materialize.returncode == 0, materialize.stderr.decode()[-3000:]
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "up", "--dagster-port", str(dagster), "--api-port", str(api)]
            + ["--collector-port", str(collector), "--consumer-metrics-port", str(consumer)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ui = f"http://127.0.0.1:{dagster}"
        wait_for("Dagster UI", lambda: httpx.get(f"{ui}/server_info").status_code == 200, proc, log)
        portal = f"http://127.0.0.1:{api}"
        wait_for("dashboard", lambda: httpx.get(portal + "/").status_code == 200, proc, log)
        # The graphs' data: an hourly series of a demo biller has points.
        engine = create_engine(f"sqlite:///{data / 'warehouse.db'}")
        with engine.connect() as conn:
            biller = conn.execute(text('SELECT MIN("BillerId") FROM DataPumpErrorAggregation'))
            biller = biller.scalar_one()
        engine.dispose()
        params = {"metricTypeId": METRIC_TYPES[0].id, "timeStampTypeId": HOURLY.id}
        series = httpx.get(f"{portal}/api/metrics/{biller}", params=params).json()
        assert any(p["value"] is not None for p in series["points"]), series
        # A point at the collector, answered by the query route once the consumer wrote it.
        at = datetime.now(UTC).replace(microsecond=0)
        key = f"up_test_{uuid.uuid4().hex[:6]}"
        body = {"app": "up-test", "time": at.isoformat(), "metrics": {key: 42.5}}
        col = f"http://127.0.0.1:{collector}"
        wait_for(
            "collector ready", lambda: httpx.get(f"{col}/readyz").status_code == 200, proc, log
        )
        assert httpx.post(f"{col}/collect", json=body).status_code == 202
        query = f"{portal}/{key}/average/{at.date().isoformat()}/{at.hour}"
        answer = wait_for(
            "the point in the query route",
            lambda: (r := httpx.get(query)).status_code == 200 and r.json()["count"] and r.json(),
            proc,
            log,
        )
        assert answer["value"] == 42.5 and answer["count"] == 1
        children = descendants(proc.pid)
        started = {int(pid) for pid in re.findall(r"\(pid (\d+)\)", log.read_text())}
        assert len(started) == (6 if nats else 5) and started <= {c.pid for c in children}
        if nats:
            assert re.search(
                r"^up +\| started nats \(pid \d+\): " + re.escape(nats), log.read_text(), re.M
            )
        assert len(children) > len(started)  # the webserver's code server, uvicorn's workers…
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, log.read_text()[-3000:]
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], [(p.pid, p.name()) for p in alive]
        assert "all stopped" in log.read_text()
        for line in log.read_text().splitlines():
            assert re.match(r"^\w+ +\| ", line), line  # every line prefixed by its process
    finally:
        if proc.poll() is None:
            for p in descendants(proc.pid):
                p.kill()
            proc.kill()


def test_the_runner_prefixes_lines_and_stops_all_when_one_exits(tmp_path):
    """A process that exits stops the others, their children included; every line is
    prefixed with its process's name."""
    child_pid = tmp_path / "child.pid"
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import pathlib, subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"pathlib.Path({str(child_pid)!r}).write_text(str(c.pid))\n"
        "print('child', c.pid)\n"
        "time.sleep(600)\n"
    )
    short = tmp_path / "short.py"
    short.write_text(
        "import pathlib, time\n"
        f"while not pathlib.Path({str(child_pid)!r}).exists():\n"
        "    time.sleep(0.05)\n"
        "print('bye')\n"
    )
    out = io.StringIO()
    processes = [
        Process("sleeper", (sys.executable, str(parent))),
        Process("short", (sys.executable, str(short))),
    ]
    assert Runner(out=out, environ=dict(os.environ)).run(processes, lambda a: True) == 1
    lines = out.getvalue().splitlines()
    assert "short   | bye" in lines
    assert any(line.startswith("short   | exited with code 0") for line in lines)
    assert lines[-1] == "up      | all stopped"
    assert all(re.match(r"^(up|sleeper|short) +\| ", line) for line in lines), lines
    started = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", out.getvalue())]
    grandchild = int(child_pid.read_text())
    assert len(started) == 2
    for pid in [*started, grandchild]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", pid
