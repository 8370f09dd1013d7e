"""The availability family's settings, read from the environment when asked (never at import)."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AvailabilitySettings:
    #: Root of the hour folders YYYY/MM/DD/HH/ holding *.jsonl, *.jsonl.gz and *.parquet files.
    events_root: Path
    #: How far back a refresh looks for files added to hour folders (the cursor's horizon).
    lookback_days: int = 7
    #: The family's refresh interval (the refresh sensor's minimum interval).
    refresh_minutes: int = 15
    #: DuckDB memory cap for one hour's statement; it spills to a temp directory beyond it.
    duckdb_memory_limit: str = "1GB"
    #: Fewer requests than this in a burn-rate window never page (a quiet scenario).
    slo_min_requests: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AvailabilitySettings":
        env = os.environ if environ is None else environ
        data = Path(env.get("METRICS_DATA_DIR") or "data")
        return cls(
            events_root=Path(env.get("METRICS_EVENTS_ROOT") or data / "events").resolve(),
            lookback_days=int(env.get("METRICS_AVAILABILITY_LOOKBACK_DAYS") or 7),
            refresh_minutes=int(env.get("METRICS_AVAILABILITY_REFRESH_MINUTES") or 15),
            duckdb_memory_limit=env.get("METRICS_AVAILABILITY_DUCKDB_MEMORY") or "1GB",
            slo_min_requests=int(env.get("METRICS_SLO_MIN_REQUESTS") or 100),
        )
