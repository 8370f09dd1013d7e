"""Running the API: ``serve(host, port, environ)`` (the ``metrics-pipeline api`` command).

Without METRICS_API_TOKENS_FILE the API is open, so it serves only on a loopback host (and even
then answers loopback clients only); on any other host it refuses to start.
"""

import logging
import os
import socket
from collections.abc import Mapping

import uvicorn
from fastapi import FastAPI

from metrics_pipeline.api.app import create_app
from metrics_pipeline.api.settings import ApiSettings
from metrics_pipeline.resources.engines import ConfigurationError
from metrics_pipeline.settings import bounded_int
from metrics_pipeline.web.hosts import is_loopback

EXIT_OK, EXIT_FAILED = 0, 1


def api_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """What worker processes need of an explicit environment: every METRICS_ variable and
    REDIS_URL (the settings readers decide which they use)."""
    return {k: v for k, v in environ.items() if k.startswith("METRICS_") or k == "REDIS_URL"}


def app_from_environment() -> FastAPI:
    """The app from os.environ: uvicorn's factory in each worker process."""
    return create_app(ApiSettings.from_environ())


def workers_of(environ: Mapping[str, str]) -> int:
    return bounded_int(environ, "METRICS_API_WORKERS", 1, 1)


def access_log_of(environ: Mapping[str, str]) -> bool:
    raw = (environ.get("METRICS_API_ACCESS_LOG") or "0").strip().lower()
    if raw not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ConfigurationError(f"METRICS_API_ACCESS_LOG: expected 1 or 0, got {raw!r}")
    return raw in ("1", "true", "yes", "on")


def check_exposure(host: str, settings: ApiSettings) -> None:
    """Refuse an open API (no tokens file) on a host other people can reach."""
    if settings.tokens_file is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve on {host} without METRICS_API_TOKENS_FILE: with no tokens the "
            "API is open and serves loopback only (use --host 127.0.0.1, or configure tokens; "
            "see docs/api.md)"
        )


def check_port_free(host: str, port: int) -> None:
    """Fail in one line when the address cannot be listened on (in use, not ours)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigurationError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {exc.strerror} (is another server using it? "
                "choose another --port)"
            ) from None


def serve(host: str, port: int, environ: Mapping[str, str] | None = None) -> int:
    """Serve the API and dashboard until interrupted. 0 after a clean stop, 1 if it cannot start.

    Bad settings raise ConfigurationError (and an absent SQLite warehouse DatabaseUnreachable)
    before anything listens; the CLI reports both in one line.
    """
    environ = os.environ if environ is None else environ
    settings = ApiSettings.from_environ(environ)
    check_exposure(host, settings)
    workers = workers_of(environ)
    access_log = access_log_of(environ)
    check_port_free(host, port)
    app = create_app(settings)  # validates tokens file, Redis URL and warehouse URL up front
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if workers > 1 and not settings.redis_url:
        logging.getLogger(__name__).warning(
            "METRICS_API_WORKERS=%s without REDIS_URL: each worker keeps its own export tasks, "
            "so a continuation token may reach a worker that does not know it (410); set "
            "REDIS_URL to share them",
            workers,
        )
    if workers == 1:
        config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=access_log)
        server = uvicorn.Server(config)
        try:
            server.run()
        except KeyboardInterrupt:
            # uvicorn re-raises Ctrl-C after its graceful shutdown: a clean stop.
            pass
        return EXIT_OK if server.started else EXIT_FAILED
    # Worker processes build their own app (own engine and pool) from the environment.
    if environ is not os.environ:
        os.environ.update(api_variables(environ))
    try:
        uvicorn.run(
            "metrics_pipeline.api.server:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            access_log=access_log,
        )
    except SystemExit as exc:
        return EXIT_FAILED if exc.code else EXIT_OK
    except KeyboardInterrupt:
        pass
    return EXIT_OK
