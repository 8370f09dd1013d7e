"""The platform's own sensors, over every family: alerts (Alertmanager) from check results."""
