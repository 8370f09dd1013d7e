"""A real dagster-daemon (and nothing else) on a temporary instance, for the refresh and backfill
benchmarks: start, watch the CPU of its whole process tree, stop."""

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from metrics_pipeline.up import stop_tree

REPO = Path(__file__).resolve().parents[1]


def pg_instance_storage(dbs: list[str], max_concurrent_runs: int | None = None) -> str:
    """dagster.yaml lines for an instance in a new throwaway PostgreSQL database (its name is
    appended to ``dbs`` for dropping), with the queue polled every second."""
    from sqlalchemy import create_engine, text

    from benchmarks.throughput import PG_ADMIN

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"mpbench_instance_{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    dbs.append(name)
    base = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    limit = f"    max_concurrent_runs: {max_concurrent_runs}\n" if max_concurrent_runs else ""
    return (
        f"storage:\n  postgres:\n    postgres_url: postgresql+psycopg2://{base}/{name}\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n  config:\n    dequeue_interval_seconds: 1\n" + limit
    )


def sample_tree(pid: int, cpu: dict[int, float], parts: dict | None = None) -> int:
    """Resident bytes of the process ``pid`` and all its descendants now; records each one's
    CPU seconds in ``cpu`` and, if given, its resident MB by command in ``parts``."""
    rss = 0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
                mine = p.memory_info().rss
                rss += mine
                if parts is not None:
                    what = " ".join(a.rsplit("/", 1)[-1] for a in p.cmdline()[1:4])
                    parts[f"{p.pid} {what}"] = round(mine / 2**20)
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return rss


class Daemon:
    def __init__(self, home: Path, env: dict, instance_yaml: str = ""):
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + instance_yaml)
        (home / "workspace.yaml").write_text(
            "load_from:\n  - python_module:\n      module_name: metrics_pipeline.definitions\n"
            f"      working_directory: {REPO}\n"
        )
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        self.proc: subprocess.Popen | None = None
        self.cpu: dict[int, float] = {}
        self.peak_rss = 0
        #: Resident MB of each process of the tree at the peak.
        self.peak_parts: dict[str, int] = {}
        #: Largest resident memory of the dagster-daemon process itself (not its children).
        self.own_peak_rss = 0

    def start(self) -> None:
        log = open(self.home / "daemon.log", "w")
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-w",
                str(self.home / "workspace.yaml"),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.home,
        )

    def sample(self) -> None:
        """Remember the CPU seconds of every process of the tree (runs come and go) and the
        largest resident memory of the whole tree seen so far."""
        parts: dict[str, int] = {}
        rss = sample_tree(self.proc.pid, self.cpu, parts)
        with contextlib.suppress(psutil.Error):
            own = psutil.Process(self.proc.pid).memory_info().rss
            self.own_peak_rss = max(self.own_peak_rss, own)
        if rss > self.peak_rss:
            self.peak_rss, self.peak_parts = rss, parts

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss / 2**20

    def wait(self, what: str, check, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dagster-daemon exited: {(self.home / 'daemon.log').read_text()[-3000:]}"
                )
            self.sample()
            value = check()
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"timed out waiting for {what}")

    def stop(self) -> None:
        """Stop the daemon and its code server and run processes (they would outlive it)."""
        if not self.proc:
            return
        stop_tree(self.proc, grace_s=30)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def runs_detail(records) -> list[dict]:
    """Status, partition range and seconds of each run record (for the results JSON)."""
    from metrics_pipeline.tags import RANGE_END, RANGE_START

    return [
        {
            "status": r.dagster_run.status.value,
            "range": [r.dagster_run.tags.get(RANGE_START), r.dagster_run.tags.get(RANGE_END)],
            "seconds": (r.end_time - r.start_time) if r.end_time and r.start_time else None,
        }
        for r in records
    ]
