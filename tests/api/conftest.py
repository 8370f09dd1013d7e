"""Fixtures: warehouses with random aggregate rows (SQLite, and a throwaway PostgreSQL database per
module), open-mode API clients over them, and a tokens file."""

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.web.auth import token_digest

from .helpers import (
    ADMIN_TOKEN,
    LOOPBACK_CLIENT,
    OPS_TOKEN,
    PG_ADMIN_URL,
    PORTAL_TOKEN,
    Warehouse,
    pg_available,
    populate,
)


@pytest.fixture(scope="module")
def sqlite_warehouse(tmp_path_factory) -> Warehouse:
    path = tmp_path_factory.mktemp("warehouse") / "warehouse.db"
    url = f"sqlite:///{path}"
    return Warehouse("sqlite", url, populate(url))


@pytest.fixture(scope="module")
def pg_warehouse() -> Iterator[Warehouse]:
    """A throwaway database on the local PostgreSQL server for this module, dropped after it."""
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (make services starts it)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"mp_api_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        resource = populate(url)
        yield Warehouse("postgres", url, resource)
        resource._engines.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def warehouse(request) -> Warehouse:
    return request.getfixturevalue(
        {"sqlite": "sqlite_warehouse", "postgres": "pg_warehouse"}[request.param]
    )


@pytest.fixture(scope="module")
def client(warehouse) -> Iterator[TestClient]:
    """An open-mode (no tokens) client calling from the loopback address."""
    app = create_app(ApiSettings(warehouse_url=warehouse.url))
    with TestClient(app, client=LOOPBACK_CLIENT) as c:
        yield c


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    path.write_text(
        json.dumps(
            [
                {"name": "portal-11", "sha256": token_digest(PORTAL_TOKEN), "billers": [11]},
                {"name": "admin", "sha256": token_digest(ADMIN_TOKEN), "billers": "*"},
                {"name": "ops", "sha256": token_digest(OPS_TOKEN), "billers": "*"},
            ]
        )
    )
    return path
