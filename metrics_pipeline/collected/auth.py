"""The collector's per-app API keys: a JSON file of SHA-256 digests, each allowed some apps or
all ("*"), in the format of the metrics API's tokens file (``apps`` instead of ``billers``)."""

from dataclasses import dataclass
from pathlib import Path

from metrics_pipeline.web.auth import load_digest_file, token_digest


@dataclass(frozen=True)
class AppKey:
    name: str
    apps: frozenset[str] | None  # None: every app

    def may_send(self, app: str) -> bool:
        return self.apps is None or app in self.apps


def load_app_keys(path: str | Path) -> dict[str, AppKey]:
    """AppKeys by digest; a malformed file is a ConfigurationError naming the entry."""
    entries = load_digest_file(
        path, "METRICS_COLLECTOR_TOKENS_FILE", "apps", lambda a: isinstance(a, str), "app names"
    )
    return {digest: AppKey(name, allowed) for digest, (name, allowed) in entries.items()}


def find_key(keys: dict[str, AppKey], token: str) -> AppKey | None:
    return keys.get(token_digest(token))
