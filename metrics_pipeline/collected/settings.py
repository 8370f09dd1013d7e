"""Settings of the collected-metrics family, read from the environment when a process starts."""

from collections.abc import Mapping
from dataclasses import dataclass

from metrics_pipeline.resources.engines import ConfigurationError
from metrics_pipeline.settings import from_env

#: Environment variable of each setting.
VARIABLES = {
    "bus_url": "METRICS_BUS_URL",
    "stream": "METRICS_BUS_STREAM",
    "stream_replicas": "METRICS_BUS_STREAM_REPLICAS",
    "consumer_name": "METRICS_BUS_CONSUMER",
    "stream_max_bytes": "METRICS_BUS_MAX_BYTES",
    "stream_max_msgs": "METRICS_BUS_MAX_MSGS",
    "stream_max_age_s": "METRICS_BUS_MAX_AGE_S",
    "duplicate_window_s": "METRICS_BUS_DUPLICATE_WINDOW_S",
    "publish_timeout_s": "METRICS_BUS_PUBLISH_TIMEOUT_S",
    "tokens_file": "METRICS_COLLECTOR_TOKENS_FILE",
    "max_body_bytes": "METRICS_COLLECTOR_MAX_BODY_BYTES",
    "max_points": "METRICS_COLLECTOR_MAX_POINTS",
    "max_past_s": "METRICS_COLLECTOR_MAX_PAST_S",
    "max_future_s": "METRICS_COLLECTOR_MAX_FUTURE_S",
    "retry_after_s": "METRICS_COLLECTOR_RETRY_AFTER_S",
    "max_keys_per_app": "METRICS_COLLECTOR_MAX_KEYS_PER_APP",
    "fetch_batch": "METRICS_CONSUMER_BATCH",
    "ack_wait_s": "METRICS_CONSUMER_ACK_WAIT_S",
    "refresh_s": "METRICS_COLLECTED_REFRESH_S",
}


#: The largest key cap: an app's keys (up to 100 characters each) fit one 1 MB bus entry.
MAX_KEYS_PER_APP = 9000


@dataclass(frozen=True)
class CollectedSettings:
    """Everything the collector, the bus and the consumer need; tests build one directly."""

    bus_url: str = "nats://127.0.0.1:4222"
    #: The stream's name; it owns the subjects ``<stream>.>`` (so runs can share one server).
    stream: str = "METRICS_COLLECTED"
    #: Copies of the stream in a JetStream cluster (3 on the deploy/helm/nats cluster).
    stream_replicas: int = 1
    consumer_name: str = "collected-writer"
    stream_max_bytes: int = 1 << 30
    stream_max_msgs: int = 10_000_000
    stream_max_age_s: float = 7 * 86400.0
    duplicate_window_s: float = 600.0
    publish_timeout_s: float = 2.0
    tokens_file: str = ""
    max_body_bytes: int = 1 << 20
    max_points: int = 10_000
    max_past_s: float = 7 * 86400.0
    max_future_s: float = 300.0
    retry_after_s: int = 2
    #: Distinct keys an app may send (0: no cap); its keys are one bus key-value entry.
    max_keys_per_app: int = 1000
    fetch_batch: int = 500
    ack_wait_s: float = 30.0
    refresh_s: int = 300

    def __post_init__(self):
        if not 0 <= self.max_keys_per_app <= MAX_KEYS_PER_APP:
            raise ConfigurationError(
                f"METRICS_COLLECTOR_MAX_KEYS_PER_APP: expected 0 (no cap) to {MAX_KEYS_PER_APP}, "
                f"got {self.max_keys_per_app}"
            )

    @property
    def subject(self) -> str:
        """The subject the collector publishes to (inside the stream's own subjects)."""
        return f"{self.stream}.points"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "CollectedSettings":
        return from_env(cls, VARIABLES, environ)
