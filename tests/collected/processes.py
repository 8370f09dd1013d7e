"""Real processes for the load and fault tests (and benchmarks/collected.py): the collector and
the consumer as ``metrics-pipeline`` commands, a NATS server of one's own, and an async client
that sends requests at a bounded concurrency and records status and latency."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from metrics_pipeline.collected.settings import CollectedSettings

CLI = [sys.executable, "-m", "metrics_pipeline.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def family_env(settings: CollectedSettings, warehouse_url: str, **extra: str) -> dict[str, str]:
    """The environment of a collector or consumer process for ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_")}
    env.update(
        {
            "METRICS_WAREHOUSE_URL": warehouse_url,
            "METRICS_BUS_URL": settings.bus_url,
            "METRICS_BUS_STREAM": settings.stream,
            "METRICS_BUS_CONSUMER": settings.consumer_name,
            **extra,
        }
    )
    return env


def wait_http(url: str, timeout: float = 20, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == status:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer {status} within {timeout}s")
        time.sleep(0.1)


class CollectorProcess:
    """``metrics-pipeline collector`` on a free loopback port, stopped by its PID."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*CLI, "collector", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20) -> "CollectorProcess":
        wait_http(f"{self.url}/readyz", timeout)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_consumer(env: dict[str, str], log: Path, *args: str, script: str | None = None):
    """A consumer process (``script``: Python code run instead of the plain CLI)."""
    command = (
        [sys.executable, "-c", script, "consumer", *args] if script else [*CLI, "consumer", *args]
    )
    out = open(log, "ab")  # noqa: SIM115 - inherited by the child
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def drain(env: dict[str, str], log: Path, timeout: float = 120) -> str:
    """``consumer --once`` to the end; its summary line."""
    proc = start_consumer(env, log, "--once", "--metrics-port", "0")
    assert proc.wait(timeout) == 0, log.read_text()[-2000:]
    return log.read_text().strip().splitlines()[-1]


class NatsServer:
    """A nats-server with JetStream of one's own: free port, its own store directory."""

    def __init__(self, store_dir: Path):
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store_dir = store_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "NatsServer":
        exe = os.environ.get("NATS_SERVER") or "/usr/sbin/nats-server"
        self.proc = subprocess.Popen(
            [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a crash would be."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class LoadResult:
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    retry_after: set[str] = field(default_factory=set)
    accepted_points: int = 0
    elapsed: float = 0.0

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


async def send(
    url: str,
    bodies: list,
    concurrency: int,
    rate: float | None = None,
    retry_until: float | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """POST each body to ``url``/collect, ``concurrency`` at a time, at most ``rate`` per second.
    With ``retry_until`` (seconds), a 429/503/connection error is retried after its Retry-After
    until then (the same body, so the same ids)."""
    result = LoadResult()
    queue: asyncio.Queue = asyncio.Queue()
    for i, body in enumerate(bodies):
        queue.put_nowait((i, body))
    started = time.perf_counter()
    deadline = started + (retry_until or 0)

    async def worker(client: httpx.AsyncClient):
        while True:
            try:
                i, body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if rate:
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            while True:
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{url}/collect", json=body)
                    status = r.status_code
                    if "retry-after" in r.headers:
                        result.retry_after.add(r.headers["retry-after"])
                except httpx.HTTPError:
                    status = 0
                result.latencies.append(time.perf_counter() - t0)
                result.statuses.append(status)
                if status == 202:
                    items = body if isinstance(body, list) else [body]
                    result.accepted_points += sum(len(b["metrics"]) for b in items)
                    break
                if retry_until is None or time.perf_counter() > deadline:
                    break
                await asyncio.sleep(0.2)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result
