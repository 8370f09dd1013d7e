"""Where alerts go and how often the alerts sensor looks (read when needed, never at import)."""

from dataclasses import dataclass
from datetime import timedelta

from metrics_pipeline.settings import from_env


@dataclass(frozen=True)
class AlertSettings:
    #: Alertmanager's base URL (``http://alertmanager:9093``); alerts go to /api/v2/alerts.
    alertmanager_url: str = ""
    #: A plain webhook that takes Alertmanager's webhook JSON (teams without Alertmanager).
    webhook_url: str = ""
    #: The Dagster UI's base URL, for the alerts' ``dagster_url`` annotation.
    dagster_ui_url: str = ""
    #: Seconds between the sensor's ticks.
    interval_s: int = 60
    #: Seconds after each post at which a firing alert expires unless posted again; 0: four
    #: ticks but at least four minutes, as Prometheus posts its alerts (4 x max(interval, 1 min)),
    #: so a daemon restart or a slow tick does not let Alertmanager resolve a firing alert.
    expiry_s: int = 0
    #: Seconds one delivery may take before it counts as failed (and is retried next tick).
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, environ=None) -> "AlertSettings":
        return from_env(
            cls,
            {
                "alertmanager_url": "METRICS_ALERTMANAGER_URL",
                "webhook_url": "METRICS_ALERT_WEBHOOK_URL",
                "dagster_ui_url": "METRICS_DAGSTER_UI_URL",
                "interval_s": "METRICS_ALERTS_INTERVAL_S",
                "expiry_s": "METRICS_ALERTS_EXPIRY_S",
                "timeout_s": "METRICS_ALERTS_TIMEOUT_S",
            },
            environ,
        )

    @property
    def expiry(self) -> timedelta:
        """How long a posted firing alert stays active in Alertmanager without another post."""
        return timedelta(seconds=self.expiry_s or 4 * max(self.interval_s, 60))

    @property
    def enabled(self) -> bool:
        return bool(self.alertmanager_url or self.webhook_url)
