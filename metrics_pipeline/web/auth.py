"""Bearer tokens: a JSON file of SHA-256 digests, each allowed some billers or all ("*").

Only digests are stored. A request's token is hashed and looked up by digest, so the comparison
never runs over the secret itself.
"""

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from metrics_pipeline.resources.engines import ConfigurationError

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and the billers it may read (None: every biller)."""

    name: str
    billers: frozenset[int] | None

    def can_read(self, biller_id: int) -> bool:
        return self.billers is None or biller_id in self.billers

    def readable(self, biller_ids: Iterable[int]) -> list[int]:
        return [b for b in biller_ids if self.can_read(b)]


#: The caller when no tokens file is configured (open mode, loopback clients only).
LOOPBACK_PRINCIPAL = Principal("loopback (no tokens configured)", None)


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token, as kept in the tokens file."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_digest_file(
    path: str | Path, setting: str, scope: str, item_ok, item_kind: str
) -> dict[str, tuple[str, frozenset | None]]:
    """{digest: (name, allowed)} from a JSON list of ``{"name", "sha256", <scope>}`` entries,
    ``<scope>`` being "*" (None: everything) or a list of items that pass ``item_ok``. Any
    malformed entry is a ConfigurationError naming ``setting``, the file and the entry."""
    where = f"{setting} {path}"
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigurationError(f"{where}: not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigurationError(f"{where}: expected a JSON list of tokens")
    out: dict[str, tuple[str, frozenset | None]] = {}
    for i, entry in enumerate(entries):
        what = f"{where}: entry {i}"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{what}: expected an object")
        name, digest, items = entry.get("name"), entry.get("sha256"), entry.get(scope)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{what}: 'name' must be a non-empty string")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
            raise ConfigurationError(f"{what} ({name}): 'sha256' must be 64 hex digits")
        if items == "*":
            allowed = None
        elif isinstance(items, list) and all(item_ok(x) for x in items):
            allowed = frozenset(items)
        else:
            raise ConfigurationError(
                f"{what} ({name}): '{scope}' must be \"*\" or a list of {item_kind}"
            )
        if digest.lower() in out:
            raise ConfigurationError(f"{what} ({name}): the same token digest appears twice")
        out[digest.lower()] = (name, allowed)
    return out


def load_tokens(path: str | Path) -> dict[str, Principal]:
    """Principals by token digest from the tokens file; a malformed file is a ConfigurationError."""
    entries = load_digest_file(
        path,
        "METRICS_API_TOKENS_FILE",
        "billers",
        lambda b: isinstance(b, int) and not isinstance(b, bool),
        "ids",
    )
    return {digest: Principal(name, allowed) for digest, (name, allowed) in entries.items()}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
