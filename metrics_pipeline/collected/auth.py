"""The collector's per-app API keys: a JSON file of SHA-256 digests, each allowed some apps or
all ("*"), in the format of the metrics API's tokens file (``apps`` instead of ``billers``)."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from metrics_pipeline.api.auth import token_digest
from metrics_pipeline.resources.engines import ConfigurationError

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class AppKey:
    name: str
    apps: frozenset[str] | None  # None: every app

    def may_send(self, app: str) -> bool:
        return self.apps is None or app in self.apps


def load_app_keys(path: str | Path) -> dict[str, AppKey]:
    """AppKeys by digest; a malformed file is a ConfigurationError naming the entry."""
    where = f"METRICS_COLLECTOR_TOKENS_FILE {path}"
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigurationError(f"{where}: not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigurationError(f"{where}: expected a JSON list of keys")
    keys: dict[str, AppKey] = {}
    for i, entry in enumerate(entries):
        what = f"{where}: entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigurationError(f"{what}: expected an object with a 'name'")
        digest = str(entry.get("sha256", "")).lower()
        if not _HEX64.fullmatch(digest):
            raise ConfigurationError(f"{what} ({entry['name']}): 'sha256' must be 64 hex digits")
        apps = entry.get("apps")
        if apps == "*":
            allowed = None
        elif isinstance(apps, list) and all(isinstance(a, str) for a in apps):
            allowed = frozenset(apps)
        else:
            raise ConfigurationError(f"{what} ({entry['name']}): 'apps' must be \"*\" or a list")
        keys[digest] = AppKey(entry["name"], allowed)
    return keys


def find_key(keys: dict[str, AppKey], token: str) -> AppKey | None:
    return keys.get(token_digest(token))
