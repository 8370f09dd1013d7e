"""OTLP/HTTP metrics (``POST /v1/metrics``): pure translation of an
``ExportMetricsServiceRequest`` into the family's Items, and of outcomes into OTLP answers.

- app = the resource's ``service.name``; key = the metric's name, plus ``_<unit>`` when a unit
  is given and the name does not already end with it (``{annotations}`` and the unit ``1`` are
  no unit, ``%`` is ``percent``, ``/`` is ``_per_``); characters outside ``[A-Za-z0-9_.-]``
  become ``_``.
- Gauge and sum points are one point each at the point's time (a cumulative sum is its running
  total); a histogram (explicit or exponential) point gives the points ``<key>.count``,
  ``<key>.sum``, ``<key>.min`` and ``<key>.max`` (those it carries).
- Summaries, points without a value, values beyond ``MAX_MAGNITUDE``, keys over 100
  characters and times outside the collector's window are rejected points of a partial
  success; exemplars are ignored and counted in its message.
- A point's id is a digest of its app, key, series attributes, time and value: an exporter's
  retry of a request is stored once.
"""

import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from metrics_pipeline.collected.rules import KEY_PATTERN, BadPoint, Item, finite_number

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: The fallback service.name (what the SDKs send without one: ``unknown_service:<lang>``).
UNKNOWN_SERVICE = "unknown_service"
#: google.rpc.Code of the HTTP statuses the collector answers (OTLP/HTTP's Status body).
GRPC_CODES = {400: 3, 401: 16, 403: 7, 413: 3, 415: 3, 429: 8, 503: 14}
_INVALID = re.compile(r"[^A-Za-z0-9_.-]")
_ANNOTATION = re.compile(r"\{[^}]*\}")
_EPOCH = datetime(1970, 1, 1)
#: OTLP's DataPointFlags.FLAG_NO_RECORDED_VALUE.
NO_RECORDED_VALUE = 1
#: Rejection reasons quoted in the partial-success message.
MAX_REASONS = 3


def content_format(content_type: str | None) -> str | None:
    """PROTOBUF or JSON for a request's Content-Type (parameters ignored), else None."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media if media in (PROTOBUF, JSON) else None


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent without its ``Content-Encoding`` (none or gzip), at most ``limit``
    bytes once decompressed; BadPoint for a bad encoding, OverflowError beyond the limit."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise BadPoint("Content-Encoding", f"expected gzip or none, got {encoding[:20]!r}")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise BadPoint("body", "not valid gzip") from None
    if len(out) > limit:
        raise OverflowError(f"body: more than {limit} bytes once decompressed")
    if not inflater.eof:
        raise BadPoint("body", "truncated gzip")
    return out


def parse_request(body: bytes, fmt: str) -> ExportMetricsServiceRequest:
    """The request message of a protobuf or OTLP/JSON body; BadPoint("body") when it is not."""
    request = ExportMetricsServiceRequest()
    try:
        if fmt == PROTOBUF:
            request.ParseFromString(body)
        else:
            json_format.Parse(body.decode("utf-8"), request, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        kind = "protobuf" if fmt == PROTOBUF else "OTLP/JSON"
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise BadPoint(
            "body", f"not an OTLP {kind} ExportMetricsServiceRequest: {reason}"
        ) from None
    return request


def clean_name(text: str) -> str:
    return _INVALID.sub("_", text)


def unit_suffix(unit: str) -> str:
    """The key suffix of an OTLP unit ('' for none)."""
    unit = _ANNOTATION.sub("", unit).strip()
    if unit in ("", "1"):
        return ""
    unit = unit.replace("%", "percent").replace("/", "_per_")
    return clean_name(unit).strip("_")


def metric_key(name: str, unit: str) -> str:
    """The collected key of an OTLP metric (see the module's docstring)."""
    key = clean_name(name)
    suffix = unit_suffix(unit)
    if suffix and not (key.endswith(f"_{suffix}") or key.endswith(f".{suffix}")):
        key = f"{key}_{suffix}"
    return key


def service_app(resource) -> str:
    """The app of a resource: its ``service.name``, cleaned to the app pattern."""
    for attribute in resource.attributes:
        if attribute.key == "service.name" and attribute.value.string_value:
            return clean_name(attribute.value.string_value)[:100]
    return UNKNOWN_SERVICE


def epoch_nanos(value: int) -> datetime:
    """A ``time_unix_nano`` as naive UTC, to the microsecond (truncated)."""
    return _EPOCH + timedelta(microseconds=value // 1000)


@dataclass
class Translation:
    """The items of a request, and what it left out."""

    items: list[Item] = field(default_factory=list)
    rejected: int = 0
    exemplars: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return sum(len(i.metrics) for i in self.items)

    def reject(self, count: int, reason: str) -> None:
        if count:
            self.rejected += count
            self.reasons[reason] = self.reasons.get(reason, 0) + count

    def drop_keys(self, app: str, keys: frozenset[str], reason: str) -> None:
        """Leave out the points of ``app``'s ``keys`` as rejected for ``reason``."""
        kept, dropped = [], 0
        for item in self.items:
            if item.app == app and keys & item.metrics.keys():
                left = {k: v for k, v in item.metrics.items() if k not in keys}
                dropped += len(item.metrics) - len(left)
                if not left:
                    continue
                item = replace(item, metrics=left)
            kept.append(item)
        self.items = kept
        self.reject(dropped, reason)

    def message(self) -> str:
        """The partial-success message ('' when everything was taken)."""
        parts = [f"{n} data points rejected: {r}" for r, n in list(self.reasons.items())]
        if len(parts) > MAX_REASONS:
            parts = parts[:MAX_REASONS] + [f"{len(parts) - MAX_REASONS} more reasons"]
        if self.exemplars:
            parts.append(f"{self.exemplars} exemplars ignored")
        return "; ".join(parts)


def _point_id(app: str, key: str, point, values: dict[str, float]) -> str:
    digest = hashlib.sha256()
    for part in (app, key, str(point.time_unix_nano), repr(sorted(values.items()))):
        digest.update(part.encode())
        digest.update(b"\0")
    for attribute in sorted(point.attributes, key=lambda a: a.key):
        digest.update(attribute.SerializeToString(deterministic=True))
    return f"otlp-{digest.hexdigest()[:40]}"


def _number(point) -> float | None:
    kind = point.WhichOneof("value")
    return None if kind is None else finite_number(getattr(point, kind))


def _histogram_values(point) -> dict[str, float | None]:
    values = {"count": float(point.count)}
    for name in ("sum", "min", "max"):
        if point.HasField(name):
            values[name] = finite_number(getattr(point, name))
    return values


def translate(
    request: ExportMetricsServiceRequest, now: datetime, max_past: timedelta, max_future: timedelta
) -> Translation:
    """The Items of a request (one per data point) and its rejected points."""
    out = Translation()
    for resource_metrics in request.resource_metrics:
        app = service_app(resource_metrics.resource)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind not in ("gauge", "sum", "histogram", "exponential_histogram"):
                    points = getattr(metric, kind).data_points if kind else ()
                    out.reject(len(points), f"{kind or 'no data'} is not supported")
                    continue
                key = metric_key(metric.name, metric.unit)
                for point in getattr(metric, kind).data_points:
                    _translate_point(out, app, key, kind, point, now, max_past, max_future)
    return out


def _translate_point(out, app, key, kind, point, now, max_past, max_future) -> None:
    out.exemplars += len(point.exemplars)
    if kind in ("gauge", "sum"):
        values = {key: _number(point)}
    else:
        values = {f"{key}.{name}": v for name, v in _histogram_values(point).items()}
    n = len(values)
    if point.flags & NO_RECORDED_VALUE:
        return out.reject(n, "no recorded value")
    if not all(KEY_PATTERN.fullmatch(k) for k in values):
        return out.reject(n, "metric name empty or its key over 100 characters")
    if any(v is None for v in values.values()):
        return out.reject(n, "no value, or a value beyond +-1e250")
    time = epoch_nanos(point.time_unix_nano) if point.time_unix_nano else now
    if time < now - max_past or time > now + max_future:
        return out.reject(n, "time too far from now")
    out.items.append(Item(_point_id(app, key, point, values), app, time, values))


def response_body(translation: Translation, fmt: str) -> bytes:
    """The ExportMetricsServiceResponse: ``partial_success`` set when points were rejected or
    something was ignored, in the request's format."""
    response = ExportMetricsServiceResponse()
    message = translation.message()
    if translation.rejected or message:
        response.partial_success.rejected_data_points = translation.rejected
        response.partial_success.error_message = message
    if fmt == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()


def status_body(status: int, message: str, fmt: str) -> bytes:
    """A google.rpc.Status (code, message) for an error answer, in the request's format.

    Encoded by hand (field 1 varint, field 2 string) so the server needs no googleapis protos."""
    code = GRPC_CODES.get(status, 2)
    if fmt != PROTOBUF:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
