"""A page of rows as the bytes sent: JSON (rows as objects) or CSV (a header line, then rows).

Values: datetimes as ISO 8601 UTC with ``Z``, decimals exactly as stored, NULL as ``null`` (JSON)
or an empty field (CSV).
"""

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

JSON, CSV = "json", "csv"
MEDIA_TYPES = {JSON: "application/json", CSV: "text/csv; charset=utf-8"}


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    return json.dumps(_text(value))


def render_json(head: dict, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """``head`` plus ``"rows": [{column: value}, ...]``, written straight to text."""
    names = [json.dumps(c) + ":" for c in columns]
    body = ",".join(
        "{" + ",".join(n + _json_value(v) for n, v in zip(names, row, strict=True)) + "}"
        for row in rows
    )
    text = json.dumps(head, separators=(",", ":"))
    return f'{text[:-1]},"rows":[{body}]}}'.encode()


def render_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(["" if v is None else _text(v) for v in row] for row in rows)
    return out.getvalue().encode()
