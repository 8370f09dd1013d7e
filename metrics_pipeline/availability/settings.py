"""The availability family's settings, read from the environment when asked (never at import)."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dagster import EnvVar

from metrics_pipeline.resources import data_dir
from metrics_pipeline.settings import from_env

EVENTS_ROOT = "METRICS_EVENTS_ROOT"
#: Environment variable of each setting (the events root: METRICS_EVENTS_ROOT, else
#: METRICS_DATA_DIR/events).
VARIABLES = {
    "lookback_days": "METRICS_AVAILABILITY_LOOKBACK_DAYS",
    "refresh_minutes": "METRICS_AVAILABILITY_REFRESH_MINUTES",
    "duckdb_memory_limit": "METRICS_AVAILABILITY_DUCKDB_MEMORY",
    "slo_min_requests": "METRICS_SLO_MIN_REQUESTS",
}


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
        root = env.get(EVENTS_ROOT)
        return from_env(
            cls,
            VARIABLES,
            env,
            events_root=(Path(root) if root else data_dir(env) / "events").resolve(),
        )


def events_root_config(environ: Mapping[str, str], resolve: bool):
    """The resource's events_root: EnvVar(METRICS_EVENTS_ROOT) when it is set (unless
    ``resolve``, for the command line), else the resolved path."""
    if environ.get(EVENTS_ROOT) and not resolve:
        return EnvVar(EVENTS_ROOT)
    return str(AvailabilitySettings.from_env(environ).events_root)
