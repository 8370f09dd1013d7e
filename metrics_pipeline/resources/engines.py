"""Creating SQLAlchemy engines for the three supported databases, with errors people can read."""

import re
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError


class DatabaseUnreachable(RuntimeError):
    """A database could not be reached (refused, bad login, timeout, missing file)."""

    def __init__(self, what: str, url: str, reason: str):
        self.what, self.url, self.reason = what, url, reason
        super().__init__(f"{what} unreachable at {url}: {reason}")


class ShardUnreachable(DatabaseUnreachable):
    """One biller shard could not be reached; only its billers' partitions fail."""


class ConfigurationError(ValueError):
    """A setting is malformed (bad URL, unknown driver)."""


class ShardMisconfigured(RuntimeError):
    """A shard answers but lacks a table or column the configured names expect: retrying will
    not help until the configuration (or the shard) changes."""

    def __init__(self, what: str, url: str, reason: str):
        self.what, self.url, self.reason = what, url, reason
        super().__init__(f"{what} misconfigured at {url}: {reason}")


#: Driver messages that mean "the object named in the configuration does not exist" (SQLite,
#: PostgreSQL, SQL Server). Not a bare "does not exist": FreeTDS says "Adaptive Server is
#: unavailable or does not exist" for a closed port.
_MISSING_OBJECT = re.compile(
    r"no such (table|column)|(relation|column|table) \S+ does not exist|"
    r"invalid (object|column) name|undefined(table|column)",
    re.IGNORECASE,
)


def is_missing_object(exc: BaseException) -> bool:
    """A driver error saying a table or column is missing (not a connection failure)."""
    return bool(_MISSING_OBJECT.search(describe_db_error(exc)))


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and metadata."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed URL>"


def check_driver(url: str, what: str) -> None:
    """A URL whose database driver is installed and known, checked before any run starts."""
    parsed = normalize_url(url, what)
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigurationError(
            f"{what}: unknown database driver {parsed.drivername!r} in {safe_url(url)} "
            "(use sqlite, postgresql or mssql+pyodbc)"
        ) from None
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"{what}: driver not installed for {safe_url(url)}: {exc}"
        ) from None


def normalize_url(url: str, what: str):
    """Parse a SQLAlchemy URL; plain ``postgresql://`` means the psycopg 3 driver we ship."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"{what}: not a SQLAlchemy URL: {url!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_db_engine(
    url: str,
    what: str,
    *,
    connect_timeout_s: int = 15,
    must_exist: bool = True,
    immediate_transactions: bool = False,
) -> Engine:
    """An engine for ``url``. SQLite files must exist unless ``must_exist`` is False (warehouse).

    ``immediate_transactions``: on SQLite, every transaction takes the write lock when it begins
    (BEGIN IMMEDIATE), so two writers that read then write wait for each other instead of one
    failing with "database is locked" when it upgrades its lock."""
    parsed = normalize_url(url, what)
    backend = parsed.get_backend_name()
    kwargs: dict = {"pool_pre_ping": True}
    if backend == "sqlite":
        path = parsed.database
        if path and path != ":memory:":
            file = Path(path)
            if must_exist and not file.exists():
                raise DatabaseUnreachable(what, safe_url(url), f"SQLite file {file} does not exist")
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnreachable(
                    what, safe_url(url), f"cannot create the folder {file.parent}: {exc.strerror}"
                ) from exc
        kwargs["connect_args"] = {"timeout": 60}
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
    elif backend == "mssql":
        kwargs["connect_args"] = {"timeout": connect_timeout_s}
        kwargs["fast_executemany"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise ConfigurationError(f"{what}: unknown database driver in {safe_url(url)}") from exc
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"{what}: driver not installed for {safe_url(url)}: {exc}"
        ) from exc
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if immediate_transactions:
            # SQLAlchemy's documented recipe: let SQLAlchemy, not pysqlite, emit BEGIN.
            event.listen(engine, "connect", _sqlite_manual_begin)
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def _sqlite_manual_begin(dbapi_connection, _record):
    dbapi_connection.isolation_level = None


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the API, the UI) read while a run writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def describe_db_error(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's long trailer."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = str(exc.orig)
    else:
        text = str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


class EngineCache:
    """Engines by URL for one process, created on first use, disposed at teardown."""

    def __init__(self):
        self._lock = threading.Lock()
        self._engines: dict[str, Engine] = {}

    def get(self, url: str, what: str, **kwargs) -> Engine:
        with self._lock:
            if url not in self._engines:
                self._engines[url] = create_db_engine(url, what, **kwargs)
            return self._engines[url]

    def dispose(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


def upgrade_schema(conn, metadata) -> None:
    """Create ``metadata``'s missing tables, and the columns and indexes that tables created by
    an older version lack (added columns are nullable)."""
    from sqlalchemy import inspect, text

    from metrics_pipeline.sql.warehouse import add_column_ddl

    metadata.create_all(conn, checkfirst=True)
    insp = inspect(conn)
    for table in metadata.sorted_tables:
        have = {c["name"].lower() for c in insp.get_columns(table.name, schema=table.schema)}
        for column in table.columns:
            if column.name.lower() not in have:
                conn.execute(text(add_column_ddl(table, column, conn.dialect)))
        indexes = {i["name"] for i in insp.get_indexes(table.name, schema=table.schema)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)
