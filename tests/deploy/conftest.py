"""Fixtures for the deploy/ tests: the chart reference, a throwaway PostgreSQL database for a
Dagster instance, and demo SQLite data for runs to work on."""

import os
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from .chart import CHART_DIR

PG_ADMIN_URL = os.environ.get(
    "METRICS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    if not (CHART_DIR / "values.schema.json").exists():
        pytest.skip(
            f"the Dagster Helm chart reference is not at {CHART_DIR} "
            "(CI clones the repository with shared/ beside it)"
        )
    return CHART_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def instance_db_url() -> Iterator[str]:
    """A PostgreSQL database for one module's Dagster instance, dropped afterwards
    (module-scoped: the instance outlives the processes started on it)."""
    try:
        import dagster_postgres  # noqa: F401
    except ImportError:
        message = (
            "dagster-postgres is not installed: the deployment's instance storage needs it "
            "(pyproject.toml should list dagster-postgres)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL} (make services starts it): {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"mp_deploy_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        # The URL form deploy/ prescribes for the instance: dagster-postgres needs psycopg2.
        base = PG_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
        yield f"postgresql+psycopg2://{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


#: A day inside the demo data: the demo covers the day before DEMO_END.
DEMO_END = datetime(2026, 11, 21)
DEMO_HOUR = DEMO_END - timedelta(hours=19)  # 2026-11-20 05:00


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory) -> dict[str, str]:
    """METRICS_* variables pointing at one day of SQLite demo data (catalog and shards) and an
    empty warehouse, as the deployment's Secret would."""
    from metrics_pipeline.datapump.demo import create_demo_data

    folder = tmp_path_factory.mktemp("demo")
    env = {
        "METRICS_CATALOG_URL": f"sqlite:///{folder / 'catalog.db'}",
        "METRICS_SHARD_URL_TEMPLATE": f"sqlite:///{folder / '{shard}.db'}",
        "METRICS_WAREHOUSE_URL": f"sqlite:///{folder / 'warehouse.db'}",
        "METRICS_REFRESH_MINUTES": "30",
    }
    create_demo_data(
        env["METRICS_CATALOG_URL"], env["METRICS_SHARD_URL_TEMPLATE"], DEMO_END, days=1, scale=0.2
    )
    return env
