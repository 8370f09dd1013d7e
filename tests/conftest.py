"""Shared fixtures: real SQLite files, throwaway PostgreSQL databases, a Dagster instance."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support import PG_ADMIN_URL, pg_available


class PgDatabases:
    """Creates throwaway databases on the local PostgreSQL server and drops them afterwards."""

    def __init__(self):
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self, prefix: str = "mp_test") -> str:
        return self.create_named(f"{prefix}_{uuid.uuid4().hex[:10]}")

    def create_named(self, name: str) -> str:
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture
def pg_databases() -> Iterator[PgDatabases]:
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (make services starts it)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the embedded default in a fresh folder."""
    return {"METRICS_DATA_DIR": str(tmp_path / "data")}
