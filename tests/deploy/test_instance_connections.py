"""A command's runs on a PostgreSQL instance reuse their database connections.

Dagster's PostgreSQL storages connect anew for every event they store unless told otherwise (as
dagster-webserver tells them); each connection is a new server process. ``open_instance`` holds
them open for the command's lifetime. Counted by the server itself (``pg_stat_database.sessions``).
"""

import time

import pytest
from dagster import Definitions, asset, define_asset_job
from sqlalchemy import create_engine, text

from metrics_pipeline.execution import execute, open_instance

pytestmark = pytest.mark.postgres

EVENTS = 120


@asset
def chatty(context) -> None:
    for i in range(EVENTS):
        context.log.info(f"event {i}")


def _sessions(admin_url: str, database: str) -> int:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return conn.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = :d"), {"d": database}
            ).scalar_one()
    finally:
        engine.dispose()


def test_a_command_stores_its_events_over_a_few_held_connections(tmp_path, instance_db_url):
    home = tmp_path / "home"
    home.mkdir()
    url = instance_db_url.replace("postgresql+psycopg://", "postgresql+psycopg2://")
    (home / "dagster.yaml").write_text(
        f"telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url: {url}\n"
    )
    database = instance_db_url.rsplit("/", 1)[1]
    admin = instance_db_url.rsplit("/", 1)[0] + "/postgres"
    instance = open_instance({"DAGSTER_HOME": str(home)})
    job = Definitions(assets=[chatty], jobs=[define_asset_job("chatty_job")]).resolve_job_def(
        "chatty_job"
    )
    before = _sessions(admin, database)
    result = execute(job, instance, {})
    assert result.success
    stored = len(instance.all_logs(result.run_id))
    assert stored > EVENTS
    instance.dispose()
    time.sleep(0.5)  # the server counts a session when its process ends
    opened = _sessions(admin, database) - before
    # Without held connections every stored event opens one.
    assert opened < 20, f"{opened} connections for {stored} events"
