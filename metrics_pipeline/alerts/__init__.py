"""Alerts that reach people: failed checks and runs delivered to Alertmanager (or a webhook)."""
