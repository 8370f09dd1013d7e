"""Fixtures of the collected family: a warehouse store (SQLite, and a throwaway PostgreSQL
database), and a stream of its own on the shared NATS server, deleted afterwards."""

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from metrics_pipeline.collected.settings import CollectedSettings
from metrics_pipeline.collected.store import CollectedStore
from metrics_pipeline.resources.engines import create_db_engine

NATS_URL = os.environ.get("METRICS_TEST_NATS_URL", "nats://127.0.0.1:4222")


def nats_available(url: str = NATS_URL) -> bool:
    host, port = url.rsplit("//", 1)[1].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def unique_settings(**overrides) -> CollectedSettings:
    """Settings with a stream and consumer of their own (tests share the NATS server)."""
    name = f"MPTEST_{uuid.uuid4().hex[:12].upper()}"
    return replace(
        CollectedSettings(bus_url=NATS_URL, stream=name, consumer_name=f"{name}_writer"),
        **overrides,
    )


async def delete_stream(settings: CollectedSettings) -> None:
    import nats
    from nats.js.errors import NotFoundError

    from metrics_pipeline.collected.keycap import bucket_name

    nc = await nats.connect(settings.bus_url)
    try:
        for stream in (settings.stream, f"KV_{bucket_name(settings.stream)}"):
            try:
                await nc.jetstream().delete_stream(stream)
            except NotFoundError:
                pass
    finally:
        await nc.close()


@pytest.fixture
def bus_settings() -> Iterator[CollectedSettings]:
    if not nats_available():
        if os.environ.get("CI"):
            pytest.fail(f"NATS is not reachable at {NATS_URL} (make services starts it)")
        pytest.skip(f"NATS is not reachable at {NATS_URL}")
    settings = unique_settings()
    yield settings
    asyncio.run(delete_stream(settings))


def sqlite_store(tmp_path) -> CollectedStore:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    store = CollectedStore(create_db_engine(url, "warehouse", must_exist=False))
    store.ensure_schema()
    store.url = url
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path) -> Iterator[CollectedStore]:
    if request.param == "sqlite":
        s = sqlite_store(tmp_path)
    else:
        url = request.getfixturevalue("pg_databases").create("mp_collected")
        s = CollectedStore(create_db_engine(url, "warehouse", must_exist=False))
        s.ensure_schema()
        s.url = url
    yield s
    s.engine.dispose()
