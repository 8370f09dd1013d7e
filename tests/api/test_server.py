"""`metrics-pipeline api` as a process: it serves, stops cleanly, and refuses unsafe settings."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .helpers import free_port

CLI = Path(sys.executable).with_name("metrics-pipeline")


def run_api(env: dict[str, str], host: str, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CLI), "api", "--host", host, "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_healthy(port: int, process: subprocess.Popen, timeout_s: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}: {process.stdout.read()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not answer")


def env_for(warehouse) -> dict[str, str]:
    # Empty values override whatever the test runner's environment holds.
    return {
        "METRICS_WAREHOUSE_URL": warehouse.url,
        "METRICS_API_WORKERS": "1",
        "METRICS_API_TOKENS_FILE": "",
        "REDIS_URL": "",
    }


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_cli_serves_the_api_and_stops_on_sigint(sqlite_warehouse, tokens_file, workers):
    from .helpers import ADMIN_TOKEN

    port = free_port()
    env = {
        **env_for(sqlite_warehouse),
        "METRICS_API_WORKERS": workers,
        "METRICS_API_TOKENS_FILE": str(tokens_file),
    }
    process = run_api(env, "127.0.0.1", port)
    try:
        assert wait_healthy(port, process).json()["warehouse"] == "ok"
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/metrics/11",
            params={
                "metricTypeId": 4,
                "timeStampTypeId": 2,
                "from": "2025-03-01",
                "to": "2025-03-06",
            },
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert response.status_code == 200 and len(response.json()["points"]) == 5
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=90)[0]
    assert process.returncode == 0, output


def test_the_cli_refuses_an_open_api_on_all_interfaces(sqlite_warehouse):
    process = run_api(env_for(sqlite_warehouse), "0.0.0.0", free_port())
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 2
    assert "METRICS_API_TOKENS_FILE" in output and "refusing" in output


def test_the_cli_says_when_the_demo_warehouse_is_missing(tmp_path):
    env = {"METRICS_DATA_DIR": str(tmp_path / "empty"), "METRICS_WAREHOUSE_URL": ""}
    process = run_api(env, "127.0.0.1", free_port())
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 2
    assert "warehouse.db does not exist" in output and "make demo" in output


def test_open_mode_refuses_clients_forwarded_by_a_local_proxy(sqlite_warehouse):
    from metrics_pipeline.api import ApiSettings, create_app

    from .helpers import ThreadedServer

    port = free_port()
    server = ThreadedServer(create_app(ApiSettings(warehouse_url=sqlite_warehouse.url)), port)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}/api/billers"
        assert httpx.get(url).status_code == 200
        forwarded = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.7"})
        assert forwarded.status_code == 401
        assert "loopback" in forwarded.json()["detail"]
    finally:
        server.stop()


def test_a_body_over_the_cap_is_413_on_every_route_for_every_client(sqlite_warehouse):
    """The API reads no body: one over 64 KiB is 413 wherever it is sent, and every answer,
    a 405 for a small body too, reaches clients that close after it (once a connection reset)."""
    import urllib.error
    import urllib.request

    from .helpers import oversized_requests

    port = free_port()
    process = run_api(env_for(sqlite_warehouse), "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(port, process)
        for path in ("/api/health", "/api/v2/exports-status", "/rt/average/2025-03-01/1", "/x"):
            answers = oversized_requests(base + path)
            statuses = {name: status for name, (status, _) in answers.items()}
            assert statuses == dict.fromkeys(statuses, 413) and len(statuses) == 4, answers
            for _, text in answers.values():
                body = json.loads(text)
                assert body["parameter"] == "body" and body["detail"].startswith("body: ")
        # Under the cap: the route's own answer (405: no POST here), read by a closing client.
        request = urllib.request.Request(base + "/api/health", data=b"x" * 60_000, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 405
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=90)
