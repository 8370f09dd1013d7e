"""Where alerts go and how often the alerts sensor looks (read when needed, never at import)."""

from dataclasses import dataclass

from metrics_pipeline.settings import from_env


@dataclass(frozen=True)
class AlertSettings:
    #: Alertmanager's base URL (``http://alertmanager:9093``); alerts go to /api/v2/alerts.
    alertmanager_url: str = ""
    #: A plain webhook that takes Alertmanager's webhook JSON (teams without Alertmanager).
    webhook_url: str = ""
    #: The Dagster UI's base URL, for the alerts' ``dagster_url`` annotation.
    dagster_ui_url: str = ""
    #: Seconds between the sensor's ticks; a firing alert is posted to expire after 4 of them.
    interval_s: int = 60
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
                "timeout_s": "METRICS_ALERTS_TIMEOUT_S",
            },
            environ,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.alertmanager_url or self.webhook_url)
