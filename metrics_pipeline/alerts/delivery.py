"""Posting alerts over HTTP: one JSON POST, and a one-line reason when it fails."""

import json
import urllib.error
import urllib.request

from metrics_pipeline.alerts.rules import fingerprint, plan, webhook_message


class DeliveryFailed(Exception):
    """The receiver could not be reached or refused the alerts; they are sent again later."""


def post_json(url: str, body, timeout_s: float) -> None:
    """POST ``body`` as JSON to ``url``; raises :class:`DeliveryFailed` with one line."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip().splitlines()[:1]
        raise DeliveryFailed(f"{url}: HTTP {exc.code} {' '.join(detail)}".strip()) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(f"{url}: {reason}") from exc


def alertmanager_alerts_url(base: str) -> str:
    return base.rstrip("/") + "/api/v2/alerts"


def deliver(state: dict, current: dict, now, settings, post=post_json) -> tuple[dict, list[str]]:
    """Send this tick's alerts and return the new delivery state and the failures (one line
    each). Alertmanager gets every firing alert on every tick (re-posted before it expires) and
    the resolved ones; the webhook gets an alert when it starts firing and when it is resolved.
    What could not be sent stays in the state and goes with the next tick: nothing is lost."""
    firing, resolved = plan(state.get("firing", {}), current, now, settings.expiry)
    failures = []
    pending_am = _still_resolved(state.get("pending_alertmanager", []) + resolved, firing)
    if settings.alertmanager_url:
        outgoing = [*firing.values(), *pending_am]
        try:
            if outgoing:
                post(
                    alertmanager_alerts_url(settings.alertmanager_url), outgoing, settings.timeout_s
                )
            pending_am = []
        except DeliveryFailed as exc:
            failures.append(f"alertmanager: {exc}")
    else:
        pending_am = []
    notified = set(state.get("webhook_notified", []))
    pending_hook = _still_resolved(state.get("pending_webhook", []) + resolved, firing)
    if settings.webhook_url:
        news = [a for fp, a in firing.items() if fp not in notified]
        outgoing = news + pending_hook
        try:
            if outgoing:
                post(settings.webhook_url, webhook_message(outgoing, now), settings.timeout_s)
            notified = set(firing)
            pending_hook = []
        except DeliveryFailed as exc:
            failures.append(f"webhook: {exc}")
            notified &= set(firing)
    else:
        notified, pending_hook = set(), []
    return {
        "firing": firing,
        "pending_alertmanager": pending_am,
        "pending_webhook": pending_hook,
        "webhook_notified": sorted(notified),
    }, failures


def _still_resolved(alerts: list[dict], firing: dict) -> list[dict]:
    """Resolved alerts not firing again (a firing alert supersedes its pending resolution),
    one per fingerprint (the latest)."""
    out = {}
    for alert in alerts:
        fp = fingerprint(alert["labels"])
        if fp not in firing:
            out[fp] = alert
    return list(out.values())
