"""Opaque continuation tokens: where the next page of a series starts, and which query it is for.

A token carries the query's resolved range, so a client that let ``from``/``to`` default still
gets the same range on every page. Its content is no secret (the caller may ask for any of it in
the clear); it is only checked, never trusted for access.
"""

import base64
import json
from dataclasses import dataclass
from datetime import datetime

from metrics_pipeline.api.times import MAX_TIME, MIN_TIME


class BadToken(ValueError):
    """The continuation token is malformed or belongs to another query."""


@dataclass(frozen=True)
class Cursor:
    biller_id: int
    metric_type_id: int
    level: int
    start: datetime
    end: datetime
    after: datetime

    def encode(self) -> str:
        payload = {
            "v": 1,
            "b": self.biller_id,
            "m": self.metric_type_id,
            "l": self.level,
            "f": self.start.isoformat(),
            "t": self.end.isoformat(),
            "a": self.after.isoformat(),
        }
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload = json.loads(raw)
            if payload.get("v") != 1:
                raise ValueError("version")
            cursor = cls(
                biller_id=_int(payload["b"]),
                metric_type_id=_int(payload["m"]),
                level=_int(payload["l"]),
                start=datetime.fromisoformat(payload["f"]),
                end=datetime.fromisoformat(payload["t"]),
                after=datetime.fromisoformat(payload["a"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            raise BadToken("not a continuation token of this API") from None
        if any(d.tzinfo is not None for d in (cursor.start, cursor.end, cursor.after)):
            raise BadToken("not a continuation token of this API")
        if not MIN_TIME <= cursor.start <= cursor.after < cursor.end <= MAX_TIME:
            raise BadToken("not a continuation token of this API")
        return cursor


def _int(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value
