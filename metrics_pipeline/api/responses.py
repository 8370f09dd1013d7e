"""Building JSON answers without a pydantic round trip (the routes' hot paths)."""

import json
from typing import Any

from fastapi.responses import Response


def json_response(body: Any, headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON; a NaN or infinity in it is an error, never the invalid ``NaN`` token."""
    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=False),
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def points_json(head: dict, points) -> bytes:
    """``head`` plus ``"points": [...]`` as JSON. The points are written straight to text: a page
    holds up to 1000 of them and this is the API's hot path. Values are ints or floats whose repr
    is the shortest exact form (the warehouse keeps 2 decimals), never NaN. Each point says how
    much it knows: coveredHours of expectedHours, and complete when they are equal."""
    rows = ",".join(
        [
            f'{{"t":"{t.isoformat()}Z","value":{"null" if v is None else repr(v)},'
            f'"requestCount":{"null" if n is None else n},'
            f'"coveredHours":{"null" if c is None else c},'
            f'"expectedHours":{"null" if e is None else e},'
            f'"complete":{"true" if c is not None and c == e else "false"}}}'
            for t, v, n, c, e in points
        ]
    )
    text = json.dumps(head, separators=(",", ":"))
    return f'{text[:-1]},"points":[{rows}]}}'.encode()


def series_response(body: bytes, cache: str) -> Response:
    return Response(
        body,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "X-Cache": cache},
    )
