"""The dashboard's chart library, served from the installed ``plotly`` Python package.

plotly ships plotly.min.js in its package data; the app serves that file (gzipped once, cached by
the browser) so the dashboard needs no CDN and no third-party JavaScript in this repository.
"""

import gzip
import hashlib
import importlib.metadata
import importlib.resources
import threading
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import Response


@dataclass
class ChartLibrary:
    """plotly.min.js bytes (None when plotly is not installed) and their version."""

    ROUTE = "/vendor/plotly.min.js"

    version: str | None
    content: bytes | None = field(default=None, repr=False)
    _gzipped: bytes | None = field(default=None, repr=False)
    _etag: str = field(default="", repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_package(cls) -> "ChartLibrary":
        try:
            version = importlib.metadata.version("plotly")
        except importlib.metadata.PackageNotFoundError:
            return cls(None)
        return cls(version)

    @property
    def url(self) -> str:
        return f"{self.ROUTE}?v={self.version or 'missing'}"

    def _load(self) -> bytes | None:
        # Read on first use: 4-5 MB that a pure API process never needs.
        with self._lock:
            if self.content is None and self.version is not None:
                resource = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
                self.content = resource.read_bytes()
                self._gzipped = gzip.compress(self.content, compresslevel=6, mtime=0)
                self._etag = f'"plotly-{hashlib.sha256(self.content).hexdigest()[:16]}"'
            return self.content

    def response(self, request: Request) -> Response:
        content = self._load()
        if content is None:
            return Response(
                "/* the plotly package is not installed: pip install plotly */",
                status_code=404,
                media_type="text/javascript",
            )
        etag = self._etag
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=86400",
            "Vary": "Accept-Encoding",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(self._gzipped, media_type="text/javascript", headers=headers)
        return Response(content, media_type="text/javascript", headers=headers)
