"""Real Alertmanager and Prometheus processes for the alert tests (Debian's binaries, installed
by `make test-deps`), each on a free loopback port with its own temporary data folder, and a
small webhook receiver that records what Alertmanager (or the sensor) sends."""

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.collected.processes import free_port

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def need(binary: str) -> str:
    if not shutil.which(binary):
        pytest.skip(f"{binary} is missing (Debian's package; `make test-deps` installs it)")
    return binary


@dataclass
class Receiver:
    """An HTTP server that keeps every JSON body POSTed to it."""

    messages: list = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def start(self) -> "Receiver":
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, status: str, **labels) -> list[dict]:
        """Every alert of this status in the notifications so far whose labels include these."""
        return [
            a
            for m in list(self.messages)
            for a in m["alerts"]
            if a["status"] == status and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def wait_for(self, status: str, budget_s: float = 60, **labels) -> list[dict]:
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            found = self.alerts(status, **labels)
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no {status} alert {labels} within {budget_s} s: {self.messages}")


@dataclass
class Link:
    """A TCP link on a port of its own to ``127.0.0.1:target``: ``cut`` refuses connections
    (the network is down, the far side keeps running), ``start`` again restores it."""

    target: int
    port: int = field(default_factory=free_port)
    listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Link":
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
        self.listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                far = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                near.close()  # the far side is down: the near side sees the connection drop
                continue
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def wait_http(url: str, budget_s: float = 60) -> None:
    deadline = time.monotonic() + budget_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class _Binary:
    """A server binary run in ``folder`` on ``port``: started with a config written there, ready
    when ``/-/ready`` answers; ``stop`` and ``start`` again keep its port and data (a restart)."""

    name = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self, config_name: str, config: str, arguments: list[str]):
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / config_name
        path.write_text(config)
        self.process = subprocess.Popen(
            [need(self.name), f"--config.file={path}", *arguments, "--log.level=warn"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / f"{Path(config_name).stem}.log", "ab"),  # noqa: SIM115
        )
        wait_http(f"{self.url}/-/ready")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@dataclass
class Alertmanager(_Binary):
    """One Alertmanager, single-node, routing every alert to ``receiver_url`` with short waits;
    ``stop`` and ``start`` again keep its port and data folder (a restart)."""

    folder: Path
    receiver_url: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    name = ALERTMANAGER

    def start(self) -> "Alertmanager":
        return self.launch(
            "alertmanager.yml",
            "global:\n  resolve_timeout: 2s\n"
            "route:\n  receiver: hook\n  group_by: [alertname, biller, scenario, job]\n"
            "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
            "receivers:\n- name: hook\n  webhook_configs:\n"
            f"  - url: {self.receiver_url}\n    send_resolved: true\n",
            [
                f"--storage.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
        )

    def active(self, **labels) -> list[dict]:
        """The alerts Alertmanager holds as active whose labels include these."""
        return [
            a
            for a in get_json(f"{self.url}/api/v2/alerts?active=true&silenced=false")
            if a["status"]["state"] == "active"
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]


@dataclass
class Prometheus(_Binary):
    """One Prometheus scraping ``target`` (host:port) every second as job metrics-pipeline-api,
    evaluating ``rules`` (a file) every second."""

    folder: Path
    target: str
    rules: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    name = PROMETHEUS

    def start(self) -> "Prometheus":
        return self.launch(
            "prometheus.yml",
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: [{self.rules}]\n"
            "scrape_configs:\n- job_name: metrics-pipeline-api\n  metrics_path: /metrics\n"
            f"  static_configs:\n  - targets: ['{self.target}']\n",
            [
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
        )

    def query(self, expr: str) -> list[dict]:
        from urllib.parse import quote

        return get_json(f"{self.url}/api/v1/query?query={quote(expr)}")["data"]["result"]

    def firing(self, name: str) -> list[dict]:
        alerts = get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def wait_until(what: str, probe, budget_s: float = 90):
    """``probe()``'s first truthy answer, polled every half second for up to ``budget_s``."""
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"not within {budget_s} s: {what}")
