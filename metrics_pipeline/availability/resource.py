"""The family's Dagster resource: where the hour folders are and which warehouse to write."""

import threading
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from metrics_pipeline.availability.settings import AvailabilitySettings
from metrics_pipeline.availability.writer import Store
from metrics_pipeline.resources.engines import create_db_engine


class AvailabilityResource(ConfigurableResource):
    """Event files (METRICS_EVENTS_ROOT) and the warehouse (METRICS_WAREHOUSE_URL)."""

    events_root: str = Field(description="Root of the YYYY/MM/DD/HH/ event folders")
    warehouse_url: str = Field(description="SQLAlchemy URL of the warehouse")
    lookback_days: int = 7
    refresh_minutes: int = 15
    duckdb_memory_limit: str = "1GB"
    slo_min_requests: int = 100

    _store: Store | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def settings(self) -> AvailabilitySettings:
        return AvailabilitySettings(
            events_root=Path(self.events_root),
            lookback_days=self.lookback_days,
            refresh_minutes=self.refresh_minutes,
            duckdb_memory_limit=self.duckdb_memory_limit,
            slo_min_requests=self.slo_min_requests,
        )

    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                engine = create_db_engine(self.warehouse_url, "warehouse", must_exist=False)
                self._store = Store(engine)
                self._store.ensure_schema()
            return self._store

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._store is not None:
            self._store.engine.dispose()
