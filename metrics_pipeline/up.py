"""``metrics-pipeline up``: the whole platform on one machine, in one terminal.

Starts the Dagster webserver and daemon, the API and dashboard, the collector and the consumer
(and a NATS server with JetStream when the bus URL is on this machine, ``nats-server`` is
installed and nothing answers there), prefixes every line of their output with the process's
name, and stops them all — each with its own children — on one Ctrl-C (SIGINT) or SIGTERM, or
when one of them exits.

``plan`` is pure (what to start, from the environment and the ports); ``run`` starts and stops.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import psutil

from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.resources import data_dir
from metrics_pipeline.web.hosts import is_loopback

#: A started process gets this long to stop on SIGTERM before it is killed.
STOP_GRACE_S = 15.0
#: How long a process that others need (NATS) may take to accept connections.
READY_WAIT_S = 30.0


@dataclass(frozen=True)
class Ports:
    host: str = "127.0.0.1"
    dagster: int = 3000
    api: int = 8000
    collector: int = 8100
    consumer_metrics: int = 9108


@dataclass(frozen=True)
class Process:
    """One process to start: its name (the log prefix), command line and extra environment;
    ``ready`` is a (host, port) the next processes wait for."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ready: tuple[str, int] | None = None


def bus_address(bus_url: str) -> tuple[str, int]:
    """The host and port of the first server of a ``nats://`` URL (4222 by default)."""
    first = urlsplit(bus_url.split(",")[0].strip())
    return first.hostname or "127.0.0.1", first.port or 4222


def dagster_home(environ: Mapping[str, str]) -> Path:
    """``DAGSTER_HOME``, else ``<data dir>/dagster_home``."""
    home = environ.get("DAGSTER_HOME")
    return Path(home).resolve() if home else data_dir(environ) / "dagster_home"


def demo_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``<data dir>/demo.env`` (written by demo-data) not set already."""
    path = data_dir(environ) / "demo.env"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        name, eq, value = line.strip().partition("=")
        if eq and name and not environ.get(name):
            out[name] = value
    return out


def plan(
    environ: Mapping[str, str],
    ports: Ports,
    python: str = sys.executable,
    bin_dir: Path | None = None,
    nats_server: str | None = None,
    nats_up: bool = True,
) -> list[Process]:
    """What ``up`` starts, in order. ``nats_server`` is the nats-server binary (None: not
    installed); ``nats_up`` whether the bus URL's server answers."""
    bin_dir = bin_dir or Path(python).parent
    cli = (python, "-m", "metrics_pipeline.cli")
    home = str(dagster_home(environ))
    common = {**demo_settings(environ), "DAGSTER_HOME": home}
    dagster = {
        **common,
        # One "planned" event per asset and run, as `make dev` and deploy/ set it.
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
    }
    module = ("-m", "metrics_pipeline.definitions")
    host = ports.host
    processes = []
    bus_host, bus_port = bus_address(CollectedSettings.from_environ(environ).bus_url)
    if nats_server and not nats_up and is_loopback(bus_host):
        store = str(data_dir(environ) / "nats")
        argv = (nats_server, "-a", bus_host, "-p", str(bus_port), "-js", "-sd", store)
        processes.append(Process("nats", argv, ready=(bus_host, bus_port)))
    webserver = str(bin_dir / "dagster-webserver")
    processes += [
        Process("webserver", (webserver, *module, "-h", host, "-p", str(ports.dagster)), dagster),
        Process("daemon", (str(bin_dir / "dagster-daemon"), "run", *module), dagster),
        Process("api", (*cli, "api", "--host", host, "--port", str(ports.api)), common),
        Process(
            "collector", (*cli, "collector", "--host", host, "--port", str(ports.collector)), common
        ),
        Process(
            "consumer", (*cli, "consumer", "--metrics-port", str(ports.consumer_metrics)), common
        ),
    ]
    return processes


def answers(address: tuple[str, int], timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections at ``address``."""
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return True
    except OSError:
        return False


def stop_tree(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the process and every descendant, SIGKILL to what is left after ``grace_s``."""
    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    proc.wait()


class Runner:
    """Starts processes, prefixes their output, and stops them all together."""

    def __init__(self, out: TextIO = sys.stdout, environ: Mapping[str, str] | None = None):
        self.out = out
        self.environ = dict(os.environ if environ is None else environ)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.started: list[tuple[Process, subprocess.Popen]] = []
        self.width = 0

    def say(self, name: str, line: str) -> None:
        with self.lock:
            self.out.write(f"{name:<{self.width}} | {line.rstrip()}\n")
            self.out.flush()

    def _pump(self, process: Process, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            self.say(process.name, raw.decode(errors="replace"))
        proc.wait()
        if not self.done.is_set():
            self.say(process.name, f"exited with code {proc.returncode}; stopping everything")
        self.done.set()

    def start(self, process: Process) -> subprocess.Popen:
        env = {**self.environ, **process.env, "PYTHONUNBUFFERED": "1"}
        # Its own session: a terminal's Ctrl-C reaches `up` only, which stops each in turn.
        proc = subprocess.Popen(
            process.argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started.append((process, proc))
        self.say("up", f"started {process.name} (pid {proc.pid}): {' '.join(process.argv)}")
        threading.Thread(target=self._pump, args=(process, proc), daemon=True).start()
        return proc

    def run(self, processes: Sequence[Process], wait: Callable[[tuple[str, int]], bool]) -> int:
        """Start ``processes`` in order and wait; 0 when stopped by a signal, else 1."""
        self.width = max(len(p.name) for p in [*processes, Process("up", ())])
        stopped_by: list[int] = []

        def on_signal(signum, frame):
            stopped_by.append(signum)
            self.done.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for process in processes:
                if self.done.is_set():
                    break
                self.start(process)
                if process.ready is not None and not wait(process.ready):
                    self.say("up", f"{process.name} does not answer at {process.ready}")
                    self.done.set()
            self.done.wait()
        finally:
            self.say("up", "stopping " + ", ".join(p.name for p, _ in reversed(self.started)))
            for _, proc in reversed(self.started):
                stop_tree(proc)
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.say("up", "all stopped")
        return 0 if stopped_by else 1


def wait_until_answers(address: tuple[str, int], timeout_s: float = READY_WAIT_S) -> bool:
    """Whether ``address`` accepts connections within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not answers(address):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def dagster_bin_dir() -> Path:
    """Where ``dagster-webserver`` is: beside this interpreter (a venv), else on PATH."""
    here = Path(sys.executable).parent
    if (here / "dagster-webserver").exists():
        return here
    found = shutil.which("dagster-webserver")
    return Path(found).parent if found else here


def up(ports: Ports, environ: Mapping[str, str] | None = None) -> int:
    """The ``metrics-pipeline up`` command."""
    environ = dict(os.environ if environ is None else environ)
    bus = bus_address(CollectedSettings.from_environ(environ).bus_url)
    processes = plan(
        environ,
        ports,
        bin_dir=dagster_bin_dir(),
        nats_server=shutil.which("nats-server"),
        nats_up=answers(bus),
    )
    dagster_home(environ).mkdir(parents=True, exist_ok=True)
    return Runner(environ=environ).run(processes, wait_until_answers)
