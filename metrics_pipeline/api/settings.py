"""The API's settings, read from the environment once, when the app or the server is built."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from metrics_pipeline.api.exports.lifecycle import Timings
from metrics_pipeline.api.exports.service import ExportSettings
from metrics_pipeline.availability.settings import AvailabilitySettings
from metrics_pipeline.datapump.backlog import BacklogSettings
from metrics_pipeline.datapump.objectives import ObjectiveSettings
from metrics_pipeline.resources import resource_urls
from metrics_pipeline.settings import bounded_int

#: Most points one response carries; longer ranges page with a continuation token.
MAX_POINTS = 1000


@dataclass(frozen=True)
class ApiSettings:
    """Everything the API needs; tests build one directly, the server from the environment."""

    warehouse_url: str
    #: The biller catalog (METRICS_CATALOG_URL), read for biller names only; None: ids only.
    catalog_url: str | None = None
    #: File of token digests (METRICS_API_TOKENS_FILE); None means open, loopback clients only.
    tokens_file: str | None = None
    redis_url: str | None = None
    cache_prefix: str = "metrics-pipeline:api:"
    cache_ttl_s: int = 300
    #: Seconds for connecting to / answering from Redis: a dead cache must cost little.
    redis_timeout_s: float = 0.2
    #: After a Redis failure, skip the cache this long before trying it again.
    redis_retry_after_s: float = 30.0
    refresh_seconds: int = 60
    #: Seconds an /api/metrics answer is reused for the same query (0: never).
    series_cache_s: int = 5
    db_schema: str | None = None
    max_billers: int = 10000
    #: Signs export continuation tokens (METRICS_API_EXPORT_SECRET). Unset: a random secret,
    #: kept in Redis when configured (shared by every API process), else per process.
    export_secret: str | None = field(default=None, repr=False)
    exports: ExportSettings = field(default_factory=ExportSettings)
    #: A biller objective's window under this many requests never fires
    #: (METRICS_OBJECTIVE_MIN_REQUESTS, the DataPump family's objectives check reads the same).
    objective_min_requests: int = ObjectiveSettings.min_requests
    #: An availability burn-rate window under this many requests never fires
    #: (METRICS_SLO_MIN_REQUESTS, as the availability family's checks).
    slo_min_requests: int = 100
    #: The backlog's look-back and thresholds (as the backlog sensor and check read them).
    backlog: BacklogSettings = field(default_factory=BacklogSettings)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "ApiSettings":
        environ = os.environ if environ is None else environ
        return cls(
            warehouse_url=resource_urls(environ, resolve=True)["warehouse"],
            catalog_url=resource_urls(environ, resolve=True)["catalog"],
            tokens_file=environ.get("METRICS_API_TOKENS_FILE") or None,
            redis_url=environ.get("REDIS_URL") or None,
            cache_prefix=environ.get("METRICS_API_CACHE_PREFIX") or cls.cache_prefix,
            cache_ttl_s=bounded_int(environ, "METRICS_API_CACHE_TTL_SECONDS", cls.cache_ttl_s, 1),
            refresh_seconds=bounded_int(
                environ, "METRICS_DASHBOARD_REFRESH_SECONDS", cls.refresh_seconds, 1
            ),
            series_cache_s=bounded_int(
                environ, "METRICS_API_SERIES_CACHE_SECONDS", cls.series_cache_s, 0
            ),
            export_secret=environ.get("METRICS_API_EXPORT_SECRET") or None,
            exports=_export_settings(environ),
            objective_min_requests=ObjectiveSettings.from_env(environ).min_requests,
            slo_min_requests=AvailabilitySettings.from_env(environ).slo_min_requests,
            backlog=BacklogSettings.from_env(environ),
        )


def _export_settings(environ: Mapping[str, str]) -> ExportSettings:
    d = ExportSettings()
    return ExportSettings(
        pages_ahead=bounded_int(environ, "METRICS_API_EXPORT_PAGES_AHEAD", d.pages_ahead, 0),
        bytes_per_task=bounded_int(
            environ, "METRICS_API_EXPORT_TASK_CACHE_MB", d.bytes_per_task // 2**20, 1
        )
        * 2**20,
        max_tasks=bounded_int(environ, "METRICS_API_EXPORT_MAX_TASKS", d.max_tasks, 1),
        max_cache_bytes=bounded_int(
            environ, "METRICS_API_EXPORT_CACHE_MB", d.max_cache_bytes // 2**20, 1
        )
        * 2**20,
        workers=bounded_int(environ, "METRICS_API_EXPORT_WORKERS", d.workers, 1),
        timings=Timings(
            completed_s=bounded_int(
                environ, "METRICS_API_EXPORT_COMPLETED_SECONDS", int(d.timings.completed_s), 1
            ),
            draining_s=bounded_int(
                environ, "METRICS_API_EXPORT_DRAINING_SECONDS", int(d.timings.draining_s), 1
            ),
            stale_after_s=bounded_int(
                environ, "METRICS_API_EXPORT_STALE_AFTER_SECONDS", int(d.timings.stale_after_s), 1
            ),
            stale_resume_s=bounded_int(
                environ,
                "METRICS_API_EXPORT_STALE_RESUME_SECONDS",
                int(d.timings.stale_resume_s),
                1,
            ),
        ),
    )
