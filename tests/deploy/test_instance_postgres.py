"""A real Dagster instance on PostgreSQL, configured by deploy/dagster.yaml: what the deployment
keeps there (runs, schedule state, sensor cursors, dynamic partitions) survives a restart, and the
Helm topology (a code server started with the values file's arguments, a webserver and a daemon
reaching it over gRPC) runs a job launched through the GraphQL API through the run queue.

No cluster here: the instance is deploy/dagster.yaml with its K8sRunLauncher replaced by the
default launcher (a run is a local process instead of a pod); storage, run queue, pools and
monitoring are the file's own.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from sqlalchemy import create_engine, text

from metrics_pipeline.coverage import DATAPUMP
from metrics_pipeline.datapump.demo import DEMO_BILLERS
from metrics_pipeline.definitions import build_definitions
from metrics_pipeline.resources.warehouse import WarehouseResource
from metrics_pipeline.semantics import HOURLY

from .chart import INSTANCE_YAML, VALUES_FILES, load_yaml
from .conftest import DEMO_HOUR, free_port

HOURLY_ASSETS = [AssetKey(f"{m}_hourly") for m in ("response_time", "error_rate", "timeout_rate")]

pytestmark = pytest.mark.postgres

BIN = Path(sys.executable).parent
LOCATION = "metrics_pipeline"
REPOSITORY = "__repository__"
HOUR_KEY = DEMO_HOUR.strftime("%Y-%m-%d-%H:%M")


@pytest.fixture(scope="module")
def dagster_home(tmp_path_factory, instance_db_url, demo_env) -> Iterator[dict[str, str]]:
    """DAGSTER_HOME with deploy/dagster.yaml (default run launcher), and the environment every
    Dagster process of the deployment gets: the instance URL and the METRICS_* Secret."""
    home = tmp_path_factory.mktemp("dagster_home")
    config = load_yaml(INSTANCE_YAML)
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    config["run_launcher"] = {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": instance_db_url, **demo_env}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def open_instance(env: dict[str, str]) -> DagsterInstance:
    """A new instance object from the same dagster.yaml: what a restarted process gets."""
    return DagsterInstance.from_config(env["DAGSTER_HOME"])


def warehouse_rows(env: dict[str, str], biller: int) -> int:
    engine = create_engine(env["METRICS_WAREHOUSE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT count(*) FROM DataPumpResponseTimeAggregation WHERE BillerId = :b"),
                {"b": biller},
            ).scalar_one()
    finally:
        engine.dispose()


def test_runs_materializations_and_partitions_survive_a_restart(dagster_home):
    first = open_instance(dagster_home)
    try:
        assert type(first.run_storage).__name__ == "PostgresRunStorage"
        job = build_definitions(dagster_home).resolve_job_def("hourly_job")
        result = job.execute_in_process(instance=first, partition_key=HOUR_KEY)
        assert result.success
        run_id = result.run_id
    finally:
        first.dispose()

    second = open_instance(dagster_home)
    try:
        run = second.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == HOUR_KEY
        for key in HOURLY_ASSETS:
            event = second.get_latest_materialization_event(key)
            assert event is not None and event.run_id == run_id, key
            assert event.asset_materialization.partition == HOUR_KEY
    finally:
        second.dispose()
    assert warehouse_rows(dagster_home, 102) > 0


class Processes:
    """Dagster processes started by this test, each in its own session, stopped by PID."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env = folder, {**os.environ, **env}
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        # The child keeps its own copy of the log's file descriptor.
        with open(self.folder / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                args,
                env=self.env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started[name] = proc
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}.log (tail) ---\n"
            + (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]
            for name in self.started
        )

    def check_alive(self) -> None:
        for name, proc in self.started.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")

    def stop_all(self) -> None:
        for proc in reversed(list(self.started.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            # Whatever it started and left behind (a run worker) is in its own process group.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


#: Budget of each wait: returned from as soon as the state holds, so only a loaded machine uses
#: it (every process here imports Dagster and the code location).
BUDGET_S = 600


def wait_for(what: str, check, timeout: float, processes: Processes, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check_alive()
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{processes.logs()}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class GraphQL:
    def __init__(self, port: int):
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def ready(self) -> bool:
        try:
            return self.client.get("/server_info").status_code == 200
        except httpx.TransportError:
            return False

    def __call__(self, query: str, **variables) -> dict:
        response = self.client.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


LOCATION_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
SENSOR_QUERY = """
query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { id status ticks(limit: 1) { status timestamp }
    typeSpecificData { ... on SensorData { lastTickTimestamp } } } } } }
"""
STOP_SENSOR = """
mutation ($id: String!) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } }
  ... on PythonError { message } } }
"""
SET_CURSOR = """
mutation ($selector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $selector, cursor: $cursor) { __typename
    ... on PythonError { message } } }
"""
SCHEDULE_QUERY = """
query ($selector: ScheduleSelector!) { scheduleOrError(scheduleSelector: $selector) {
  __typename ... on Schedule { scheduleState { id status } } } }
"""
STOP_SCHEDULE = """
mutation ($id: String!) { stopRunningSchedule(id: $id) { __typename
  ... on ScheduleStateResult { scheduleState { status } }
  ... on PythonError { message } } }
"""
LAUNCH_RUN = """
mutation ($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId status } }
  ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on InvalidSubsetError { message }
  ... on PipelineNotFoundError { message } } }
"""
RUN_STATUS = """
query ($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }
"""
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


@pytest.mark.slow
def test_webserver_and_daemon_run_a_job_launched_through_graphql(dagster_home, tmp_path):
    values = load_yaml(VALUES_FILES[0])
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    grpc_port, web_port = free_port(), free_port()
    (tmp_path / "workspace.yaml").write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "grpc_server": {
                            "host": "127.0.0.1",
                            "port": grpc_port,
                            "location_name": LOCATION,
                        }
                    }
                ]
            }
        )
    )
    processes = Processes(tmp_path, dagster_home)
    try:
        # The code server exactly as the chart starts it, with the values file's arguments.
        processes.start(
            "code-server",
            str(BIN / "dagster"),
            "api",
            "grpc",
            "-h",
            "127.0.0.1",
            "-p",
            str(grpc_port),
            *deployment["dagsterApiGrpcArgs"],
        )
        wait_for("the code server", lambda: port_open(grpc_port), BUDGET_S, processes)
        processes.start("daemon", str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml")
        processes.start(
            "webserver",
            str(BIN / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(web_port),
            "-w",
            "workspace.yaml",
        )
        gql = GraphQL(web_port)
        wait_for("the webserver", gql.ready, BUDGET_S, processes)

        def location_loaded():
            (entry,) = gql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
            loaded = entry["locationOrLoadError"]
            assert loaded is None or loaded["__typename"] != "PythonError", loaded
            return entry["loadStatus"] == "LOADED" and loaded is not None

        wait_for("the code location", location_loaded, BUDGET_S, processes)

        repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        sensor = {**repo, "sensorName": "shard_retry_sensor"}

        def first_sensor_tick_done():
            state = gql(SENSOR_QUERY, selector=sensor)["sensorOrError"]["sensorState"]
            ticks = state["ticks"]
            if not ticks or ticks[0]["status"] == "STARTED":
                return None
            # The daemon marks the tick finished, then writes the sensor's state (status
            # DECLARED_IN_CODE, cursor, last tick): stopping before that write would be clobbered.
            written = (state["typeSpecificData"] or {}).get("lastTickTimestamp")
            return state if written == ticks[0]["timestamp"] else None

        # The daemon evaluates shard_retry_sensor (RUNNING by default) soon after it starts; the
        # next tick is a minute later, so stopping it once the first tick's state is written does
        # not race a tick in flight.
        state = wait_for(
            "shard_retry_sensor's first tick", first_sensor_tick_done, BUDGET_S, processes
        )
        assert state["ticks"][0]["status"] in ("SUCCESS", "SKIPPED"), state
        stopped = gql(STOP_SENSOR, id=state["id"])["stopSensor"]
        assert stopped["instigationState"]["status"] == "STOPPED", stopped
        cursor = gql(SET_CURSOR, selector=sensor, cursor="cursor-set-by-test")["setSensorCursor"]
        assert cursor["__typename"] == "Sensor", cursor
        schedule = {**repo, "scheduleName": "refresh_schedule"}
        state = gql(SCHEDULE_QUERY, selector=schedule)["scheduleOrError"]["scheduleState"]
        assert state["status"] == "RUNNING"  # default_status=RUNNING in the code
        result = gql(STOP_SCHEDULE, id=state["id"])["stopRunningSchedule"]
        assert result["scheduleState"]["status"] == "STOPPED", result

        partition = HOUR_KEY
        launched = gql(
            LAUNCH_RUN,
            params={
                "selector": {**repo, "jobName": "hourly_job"},
                "runConfigData": {},
                "executionMetadata": {
                    "tags": [
                        {"key": "dagster/partition", "value": partition},
                        {"key": "metrics/billers", "value": "101"},
                    ]
                },
            },
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        # The run queue holds it until the daemon dequeues it (within the pool's limit).
        assert launched["run"]["status"] == "QUEUED"

        def finished():
            status = gql(RUN_STATUS, id=run_id)["runOrError"]["status"]
            return status if status in DONE else None

        assert wait_for("the run", finished, BUDGET_S, processes, interval=1.0) == "SUCCESS", (
            processes.logs()
        )
    finally:
        processes.stop_all()
    for name, proc in processes.started.items():
        assert proc.returncode is not None, f"{name} still running"

    restarted = open_instance(dagster_home)
    try:
        run = restarted.get_run_by_id(run_id)
        assert run.status == DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == partition
        states = {s.instigator_name: s for s in restarted.all_instigator_state()}
        assert states["refresh_schedule"].status.value == "STOPPED"
        assert states["shard_retry_sensor"].status.value == "STOPPED"
        assert states["shard_retry_sensor"].instigator_data.cursor == "cursor-set-by-test"
    finally:
        restarted.dispose()
    assert warehouse_rows(dagster_home, 101) > 0
    # The run launched through the UI's call computed only the biller it was asked for.
    hour = datetime.strptime(HOUR_KEY, "%Y-%m-%d-%H:%M")
    ledger = WarehouseResource(url=dagster_home["METRICS_WAREHOUSE_URL"]).read_ledger(
        DATAPUMP, HOURLY, hour, hour + HOURLY.length
    )
    # (the refresh schedule may have fired at :00 or :30 before the test stopped it)
    mine = {b for b, entry in ledger[hour].items() if entry.run_id == run_id}
    assert mine == {str(DEMO_BILLERS[0].biller_id)}
