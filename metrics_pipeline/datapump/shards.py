"""ConfigurableResources for the catalog, the biller shards and the warehouse.

URLs come from EnvVar (see :func:`datapump_resources`); table and column
names and the metric rules are plain config with the seed's defaults, so a deployment whose names
differ changes values, not code.
"""

import dataclasses
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from dagster import Config, ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import DBAPIError, NoSuchTableError, OperationalError

from metrics_pipeline.datapump.sql import (
    CatalogNames,
    IrregularTimestamps,
    ShardForm,
    ShardNames,
    as_naive_utc,
    cell_counts_query,
    changed_cells_query,
    enabled_billers_query,
    fold_facts,
    fold_guided_percentiles,
    fold_percentiles,
    guided_percentiles_query,
    hourly_facts_query,
    hourly_percentiles_query,
    ids_query,
    max_id_query,
    percentile_targets,
    processing_query,
    recent_cells_query,
    sample_created_query,
    shard_form,
    undated_query,
)
from metrics_pipeline.resources import resource_urls
from metrics_pipeline.resources.cursor import ShardCursor
from metrics_pipeline.resources.engines import (
    ConfigurationError,
    DatabaseUnreachable,
    EngineCache,
    ShardMisconfigured,
    ShardUnreachable,
    check_driver,
    describe_db_error,
    is_missing_object,
    safe_url,
)
from metrics_pipeline.semantics import Partial, Rules
from metrics_pipeline.settings import from_env
from metrics_pipeline.sql.dialect import PlainForm


@dataclass(frozen=True)
class Biller:
    biller_id: int
    name: str | None
    shard: str


def names_config(names_type: type, doc: str) -> type[Config]:
    """A Config class with the fields and defaults of a names dataclass of the SQL layer, so the
    launchpad shows every overridable name (``schema`` becomes ``db_schema``: pydantic owns
    ``schema``), and ``to_names()`` gives the dataclass back."""
    annotations, namespace = {}, {"__doc__": doc, "__module__": __name__}
    for f in dataclasses.fields(names_type):
        key = "db_schema" if f.name == "schema" else f.name
        annotations[key] = f.type
        namespace[key] = f.default

    def to_names(self):
        data = self.model_dump()
        data["schema"] = data.pop("db_schema")
        return names_type(**data)

    namespace.update(__annotations__=annotations, to_names=to_names)
    return type(f"{names_type.__name__}Config", (Config,), namespace)


CatalogTableNames = names_config(CatalogNames, "Table and column names in the catalog database.")
ShardTableNames = names_config(ShardNames, "Table and column names in every shard database.")


class MetricRulesConfig(Config):
    timeout_status_codes: list[int] = [408, 504]
    timeout_words: list[str] = ["timeout"]
    timeout_threshold_ms: float = 30000.0
    success_min: int = 200
    success_max: int = 399

    def to_rules(self) -> Rules:
        return Rules(
            timeout_status_codes=tuple(self.timeout_status_codes),
            timeout_words=tuple(self.timeout_words),
            timeout_threshold_ms=self.timeout_threshold_ms,
            success_min=self.success_min,
            success_max=self.success_max,
        )


class CatalogResource(ConfigurableResource):
    """The catalog database: which billers have the DataPump enabled, and their shards."""

    url: str = Field(description="SQLAlchemy URL of the catalog (METRICS_CATALOG_URL)")
    names: CatalogTableNames = CatalogTableNames()
    connect_timeout_s: int = 15

    _engines: EngineCache = PrivateAttr(default_factory=EngineCache)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self._engines.dispose()

    def enabled_billers(self) -> list[Biller]:
        engine = self._engines.get(self.url, "catalog", connect_timeout_s=self.connect_timeout_s)
        try:
            with engine.connect() as conn:
                rows = conn.execute(enabled_billers_query(self.names.to_names())).all()
        except OperationalError as exc:
            raise DatabaseUnreachable(
                "catalog", safe_url(self.url), describe_db_error(exc)
            ) from exc
        return [Biller(int(r.biller_id), r.biller_name, str(r.shard_name)) for r in rows]


#: Hours of a shard's first query that lists its calls, before its rate of calls is known.
FIRST_LISTED_HOURS = 6


class ShardsResource(ConfigurableResource):
    """The biller shards: one database per ShardName, reached through a URL template."""

    url_template: str = Field(
        description="SQLAlchemy URL with {shard} for ShardName (METRICS_SHARD_URL_TEMPLATE)"
    )
    names: ShardTableNames = ShardTableNames()
    rules: MetricRulesConfig = MetricRulesConfig()
    max_parallel_shards: int = Field(
        default=4, description="Shard connections one run opens at once"
    )
    chunk_biller_hours: int = Field(
        default=2400,
        description="Biller-hours read per shard query (hours = this / billers of the shard); "
        "bounds memory and query time",
    )
    chunk_calls: int = Field(
        default=4_000_000,
        description="Calls a SQLite shard query lists at most, about (their response times are "
        "listed; the hours per query follow the shard's busiest hour so far); bounds memory",
    )
    busy_retries: int = Field(
        default=2, description="Times a busy biller is tried again within a run, after the others"
    )
    busy_retry_delay_s: float = Field(
        default=20.0, description="Wait before each retry of busy billers (bounds the run's wait)"
    )
    connect_timeout_s: int = 15

    _engines: EngineCache = PrivateAttr(default_factory=EngineCache)
    _forms: dict[str, ShardForm] = PrivateAttr(default_factory=dict)
    #: Shards whose queries list their calls: the most calls per biller in an hour of the last
    #: chunk read (what sizes the next chunk's hours).
    _call_rates: dict[str, int] = PrivateAttr(default_factory=dict)
    #: SQLite shards: the plain form of their CreatedDate text, or None (not plain).
    _plain: dict[str, PlainForm | None] = PrivateAttr(default_factory=dict)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self._engines.dispose()

    def _form(self, shard: str, conn) -> ShardForm:
        """How this shard types ResponseTime and StatusCode (reflected once per shard)."""
        if shard not in self._forms:
            names = self.names.to_names()
            try:
                columns = inspect(conn).get_columns(names.detail_table, schema=names.schema)
            except NoSuchTableError as exc:
                raise ShardMisconfigured(
                    f"shard {shard}",
                    safe_url(self.shard_url(shard)),
                    f"no such table: {names.detail_table}",
                ) from exc
            types = {str(c["name"]).lower(): c["type"] for c in columns}
            self._forms[shard] = shard_form(types, names, conn.dialect.name)
        return self._forms[shard]

    def _fast_form(self, shard: str, conn, form: ShardForm, billers, start, end) -> ShardForm:
        """``form`` with the plain form of a SQLite shard's CreatedDate text, learned from one
        row of the window (the reads verify every other row)."""
        if conn.dialect.name != "sqlite":
            return form
        if shard not in self._plain:
            sample = sample_created_query(self.names.to_names(), billers, start, end)
            self._plain[shard] = PlainForm.of(conn.execute(sample).scalar())
        plain = self._plain[shard]
        return dataclasses.replace(form, plain=plain) if plain else form

    def _read_chunk(self, conn, billers, start, end, form: ShardForm):
        """Facts and sketches per biller-hour, then the exact percentiles: only the calls of
        the buckets the sketches place them in are sorted (``guided_percentiles_query``). If
        the shard changed between the two statements, every call of the window is ranked. A
        shard that lists its calls' response times (SQLite) needs the one statement."""
        names, rules = self.names.to_names(), self.rules.to_rules()
        window = (start, end) if form.plain else None
        facts = hourly_facts_query(names, rules, billers, start, end, form)
        hours: dict = {}
        partials = fold_facts(conn.execute(facts), window, hours)
        if form.calls_listed:
            return partials  # the calls' response times gave the exact percentiles
        targets = percentile_targets(partials, hours)
        if targets is not None:
            if not targets:
                return partials  # no valid response time: no percentile
            guided = guided_percentiles_query(names, billers, start, end, targets, form)
            if fold_guided_percentiles(partials, conn.execute(guided), targets):
                return partials
            for p in partials.values():
                p.exact_percentiles = dict.fromkeys(p.exact_percentiles or ())
        ranks = hourly_percentiles_query(names, billers, start, end, form)
        fold_percentiles(partials, conn.execute(ranks), window)
        return partials

    def chunk_hours(self, billers: int) -> int:
        """Hours per shard query for this many billers: at most ``chunk_biller_hours`` in all."""
        return max(1, self.chunk_biller_hours // max(1, billers))

    def _chunk_length(self, shard: str, billers: int, form: ShardForm) -> timedelta:
        """A chunk's hours: ``chunk_hours``; for a shard whose queries list their calls, also
        about ``chunk_calls`` calls at the busiest rate of its last chunk (its first chunk a
        few hours, to learn the rate)."""
        hours = self.chunk_hours(billers)
        if form.calls_listed:
            rate = self._call_rates.get(shard)
            if rate is None:
                hours = min(hours, FIRST_LISTED_HOURS)
            else:
                hours = min(hours, max(1, self.chunk_calls // max(1, rate * billers)))
        return timedelta(hours=hours)

    def _learn_rate(self, shard: str, partials, billers: int) -> None:
        per_hour: dict = defaultdict(int)
        for (_, hour), p in partials.items():
            per_hour[hour] += p.request_count
        if per_hour:
            self._call_rates[shard] = -(-max(per_hour.values()) // max(1, billers))

    def shard_url(self, shard: str) -> str:
        return self.url_template.replace("{shard}", shard)

    def check_template(self, shard_names: Iterable[str] = ()) -> None:
        """The template is a URL with a known driver (a bad one fails before any run), and
        tells the catalog's ``shard_names`` apart: without ``{shard}`` every biller would be read
        from one database, and billers whose rows are elsewhere written as hours without calls."""
        check_driver(self.shard_url("shard"), "METRICS_SHARD_URL_TEMPLATE")
        names = sorted(set(shard_names))
        if "{shard}" not in self.url_template and len(names) > 1:
            raise ConfigurationError(
                "METRICS_SHARD_URL_TEMPLATE has no {shard} but the catalog names "
                f"{len(names)} shards ({', '.join(names[:3])}{', …' if len(names) > 3 else ''}): "
                "every biller would be read from one database"
            )

    def _engine(self, shard: str) -> Engine:
        url = self.shard_url(shard)
        try:
            return self._engines.get(
                url, f"shard {shard}", connect_timeout_s=self.connect_timeout_s
            )
        except DatabaseUnreachable as exc:
            raise ShardUnreachable(f"shard {shard}", exc.url, exc.reason) from exc

    @contextmanager
    def _unreachable_as_typed(self, shard: str):
        """Connection failures (refused, bad login, timeout, dropped) as ShardUnreachable; a
        missing table or column as ShardMisconfigured (not worth retrying)."""
        try:
            yield
        except (OperationalError, DBAPIError) as exc:
            if is_missing_object(exc):
                raise ShardMisconfigured(
                    f"shard {shard}", safe_url(self.shard_url(shard)), describe_db_error(exc)
                ) from exc
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise ShardUnreachable(
                    f"shard {shard}", safe_url(self.shard_url(shard)), describe_db_error(exc)
                ) from exc
            raise

    def read_hourly(
        self, shard: str, billers: list[int], start: datetime, end: datetime
    ) -> Iterator["ShardChunk"]:
        """The chunks of [start, end), ``chunk_hours(len(billers))`` hours each, with their
        partials per (biller, hour); hours without rows are absent.

        Every statement aggregates inside the shard: what crosses the network is one row per
        biller and hour (sketch included) and one per percentile, never the raw calls.
        """
        engine = self._engine(shard)
        chunk_start = start
        while chunk_start < end:
            with self._unreachable_as_typed(shard), engine.connect() as conn:
                form = self._form(shard, conn)
                chunk_end = min(end, chunk_start + self._chunk_length(shard, len(billers), form))
                fast = self._fast_form(shard, conn, form, billers, chunk_start, chunk_end)
                partials, plain = None, None
                if fast.plain:
                    try:
                        partials = self._read_chunk(conn, billers, chunk_start, chunk_end, fast)
                        plain = fast.plain
                    except IrregularTimestamps:
                        # Not every row is plain: this window by the general statements, and
                        # the next one asks the shard for its form again.
                        self._plain.pop(shard, None)
                if partials is None:
                    partials = self._read_chunk(conn, billers, chunk_start, chunk_end, form)
            if form.calls_listed:
                self._learn_rate(shard, partials, len(billers))
            yield ShardChunk(chunk_start, chunk_end, partials, plain)
            chunk_start = chunk_end

    def changed_cells(
        self,
        shard: str,
        billers: list[int],
        cursor: ShardCursor | None,
        since: datetime,
        overlap_ids: int,
    ) -> tuple[dict[tuple[int, datetime], int], ShardCursor | None]:
        """({(biller, hour): rows} with an Id beyond the cursor or among its pending Ids, and
        the cursor after them).

        Ids below the new position that do not exist yet (a transaction that took an Id and has
        not committed) stay pending and are asked for again, as long as they are among the last
        ``overlap_ids`` Ids. Without a cursor (a shard seen for the first time) only rows created
        since ``since`` are looked at, and the cursor starts at the shard's highest Id."""
        names = self.names.to_names()
        engine = self._engine(shard)
        with self._unreachable_as_typed(shard), engine.connect() as conn:
            if cursor is None:
                rows = conn.execute(recent_cells_query(names, billers, since)).all()
                top = conn.execute(max_id_query(names)).scalar()
                pending: set[int] = set()
                start = None
            else:
                rows = conn.execute(
                    changed_cells_query(names, cursor.position, cursor.pending)
                ).all()
                top = max([cursor.position, *(int(r.max_id) for r in rows)])
                found = set()
                if cursor.pending:
                    found = {
                        int(i)
                        for (i,) in conn.execute(
                            ids_query(names, min(cursor.pending) - 1, max(cursor.pending))
                        )
                    }
                pending = set(cursor.pending) - found
                start = cursor.position
            if top is not None and top != start:
                # Ids missing among the new ones: committed later, read next time.
                lo = max(top - overlap_ids, 0) if start is None else max(start, top - overlap_ids)
                seen = {int(i) for (i,) in conn.execute(ids_query(names, lo, top))}
                pending |= set(range(lo + 1, top + 1)) - seen
        cells = {(int(r.biller_id), as_naive_utc(r.hour)): int(r.rows) for r in rows}
        if top is None:
            return cells, cursor
        floor = int(top) - overlap_ids
        return cells, ShardCursor(int(top), tuple(sorted(i for i in pending if i > floor)))

    def first_cursor(self, shard: str, overlap_ids: int) -> ShardCursor | None:
        """A shard's cursor before its first read: its highest Id, with the Ids missing among
        the last ``overlap_ids`` as pending (None for an empty shard)."""
        names = self.names.to_names()
        engine = self._engine(shard)
        with self._unreachable_as_typed(shard), engine.connect() as conn:
            top = conn.execute(max_id_query(names)).scalar()
            if top is None:
                return None
            top, lo = int(top), max(int(top) - overlap_ids, 0)
            seen = {int(i) for (i,) in conn.execute(ids_query(names, lo, top))}
        return ShardCursor(top, tuple(sorted(set(range(lo + 1, top + 1)) - seen)))

    def cell_counts(
        self, shard: str, billers: list[int], start: datetime, end: datetime
    ) -> dict[tuple[int, datetime], int]:
        """{(biller, hour): rows} in [start, end) (reconciliation)."""
        engine = self._engine(shard)
        with self._unreachable_as_typed(shard), engine.connect() as conn:
            rows = conn.execute(cell_counts_query(self.names.to_names(), billers, start, end))
            return {(int(r.biller_id), as_naive_utc(r.hour)): int(r.rows) for r in rows}

    def undated_rows(
        self,
        shard: str,
        billers: list[int],
        start: datetime,
        end: datetime,
        verified: PlainForm | None = None,
    ) -> dict[int, int]:
        """{BillerId: rows whose CreatedDate is NULL or not a timestamp} (they are in no hour),
        among the rows that could be of [start, end) (``sql.dialect.not_a_timestamp``).
        ``verified``: the billers' chunks of [start, end) were all read on the fast path of this
        plain form (``ShardChunk.plain``), so only the range's margins are left to look at."""
        engine = self._engine(shard)
        with self._unreachable_as_typed(shard), engine.connect() as conn:
            query = undated_query(self.names.to_names(), billers, start, end, verified)
            rows = conn.execute(query).all()
        return {int(r.biller_id): int(r.rows) for r in rows}

    def busy_billers(self, shard: str, billers: list[int]) -> set[int]:
        """Billers whose Processing flag is set in their shard (a missing row means not busy)."""
        engine = self._engine(shard)
        with self._unreachable_as_typed(shard), engine.connect() as conn:
            rows = conn.execute(processing_query(self.names.to_names(), billers)).all()
        return {int(r.biller_id) for r in rows if r.processing}


class ShardChunk(NamedTuple):
    """One chunk of a shard's read: its hours [start, end) and partials per (biller, hour)."""

    start: datetime
    end: datetime
    partials: dict[tuple[int, datetime], Partial]
    #: The plain form the chunk was read in (fast path), else None: then every row of its
    #: margin-widened range is of that form, and every one in [start, end) in a real hour.
    plain: PlainForm | None = None


@dataclass(frozen=True)
class _ShardSettings:
    """How the shards are read (the shards resource's settings)."""

    busy_retries: int = ShardsResource.model_fields["busy_retries"].default
    busy_retry_delay_s: float = ShardsResource.model_fields["busy_retry_delay_s"].default
    max_parallel_shards: int = ShardsResource.model_fields["max_parallel_shards"].default


def datapump_resources(environ: Mapping[str, str] | None = None, resolve: bool = False) -> dict:
    """The family's own resources, the catalog and the shards, from the environment (EnvVar
    where a variable is set, the embedded SQLite default where not; plain values with
    ``resolve=True``)."""
    environ = os.environ if environ is None else environ
    urls = resource_urls(environ, resolve)
    return {
        "catalog": CatalogResource(url=urls["catalog"]),
        "shards": ShardsResource(
            url_template=urls["shards"],
            **from_env(
                _ShardSettings,
                {
                    "busy_retries": "METRICS_BUSY_RETRIES",
                    "busy_retry_delay_s": "METRICS_BUSY_RETRY_DELAY_S",
                    "max_parallel_shards": "METRICS_MAX_PARALLEL_SHARDS",
                },
                environ,
            ).__dict__,
        ),
    }
