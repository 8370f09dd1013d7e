"""The metrics HTTP API and the auto-refreshing dashboard (FastAPI). See docs/api.md."""

from metrics_pipeline.api.app import create_app
from metrics_pipeline.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
