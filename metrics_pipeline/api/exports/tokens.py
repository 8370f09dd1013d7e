"""Signed, opaque continuation tokens of exports.

A token names a task and a page, and carries digests of the caller and of the query, signed with
HMAC-SHA256 under the server's export secret. The client can neither forge nor alter one (400),
use another caller's (404) or use one with another query (400); the task itself lives in the
store, so a token of a task that is gone is refused there (410).
"""

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass


class BadToken(ValueError):
    """Not a token this server signed (malformed, tampered, or signed under another secret)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def digest(text: str) -> str:
    """A short stable digest (caller ids and queries inside tokens)."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class PageToken:
    task_id: str
    page: int
    caller: str
    query: str

    def sign(self, secret: bytes) -> str:
        payload = json.dumps(
            {"v": 1, "t": self.task_id, "p": self.page, "c": self.caller, "q": self.query},
            separators=(",", ":"),
        ).encode()
        body = _b64(payload)
        mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()[:18]
        return f"{body}.{_b64(mac)}"

    @classmethod
    def verify(cls, token: str, secret: bytes) -> "PageToken":
        """The token's content when its signature holds, else BadToken."""
        body, dot, mac = token.strip().partition(".")
        if not dot or not body or not mac:
            raise BadToken("not a continuation token of this API")
        expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()[:18]
        try:
            given = _unb64(mac)
        except ValueError:
            raise BadToken("not a continuation token of this API") from None
        if not hmac.compare_digest(given, expected):
            raise BadToken("the continuation token was altered or is not from this server")
        try:
            payload = json.loads(_unb64(body))
            token_ = cls(str(payload["t"]), int(payload["p"]), str(payload["c"]), str(payload["q"]))
        except (ValueError, TypeError, KeyError):
            raise BadToken("not a continuation token of this API") from None
        if payload.get("v") != 1 or token_.page < 1:
            raise BadToken("not a continuation token of this API")
        return token_
