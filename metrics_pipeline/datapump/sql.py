"""Statements sent to the catalog and to the biller shards."""

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    type_coerce,
)

from metrics_pipeline.clock import as_naive_utc
from metrics_pipeline.semantics import (
    PERCENTILES,
    Partial,
    Rules,
    Sketch,
    calls_summary,
    nearest_rank,
    round2,
    to_decimal,
)
from metrics_pipeline.sql.dialect import (
    PlainForm,
    among_json_rows,
    as_number,
    bucket_counts,
    call_values,
    created_between,
    digits_as_int,
    hour_floor,
    irregular_timestamp,
    json_hour,
    not_a_timestamp,
    plain_created_between,
    sketch_bucket,
    text_hour,
    three_digit_code,
    trimmed,
)


@dataclass(frozen=True)
class CatalogNames:
    """Names in the catalog database (override any of them in configuration)."""

    table: str = "BillerElasticOptions"
    biller_id: str = "BillerId"
    biller_name: str = "BillerName"
    shard_name: str = "ShardName"
    enabled: str = "IsDataPumpEnabled"
    schema: str | None = None


@dataclass(frozen=True)
class ShardNames:
    """Names in every shard database (override any of them in configuration)."""

    detail_table: str = "DataPumpDetail"
    detail_id: str = "DataPumpDetailId"
    biller_id: str = "BillerId"
    created: str = "CreatedDate"
    response_time: str = "ResponseTime"
    status_code: str = "StatusCode"
    occupancy_table: str = "BillerDataPump"
    occupancy_biller_id: str = "BillerId"
    processing: str = "Processing"
    schema: str | None = None


@dataclass(frozen=True)
class ShardForm:
    """How a shard stores the columns it may type differently: ``ResponseTime`` as text
    (VARCHAR: read as a number by one rule, see ``as_number``), ``StatusCode`` as a number (an
    INT column: read as its digits). Read from the shard's own column types once."""

    response_time_text: bool = False
    status_code_numeric: bool = False
    #: A SQLite shard whose CreatedDate text is of this plain form: the hourly statements take
    #: the fast path (``dialect.plain_created_between``); a window with a row of another form
    #: raises ``IrregularTimestamps`` and is read by the general path.
    plain: PlainForm | None = None
    #: Every valid call's response time listed per biller-hour (``call_values``; SQLite): the
    #: sketch and the exact percentiles come from the one facts statement (``fold_facts``)
    #: rather than from a grouping by bucket in the shard and a second, ranking statement.
    calls_listed: bool = False


class IrregularTimestamps(Exception):
    """A fast-path read met a CreatedDate that is not plain text of the shard's form."""


def catalog_table(names: CatalogNames, metadata: MetaData | None = None) -> Table:
    return Table(
        names.table,
        metadata or MetaData(),
        Column(names.biller_id, Integer, primary_key=True, autoincrement=False),
        Column(names.biller_name, String(200)),
        Column(names.shard_name, String(128), nullable=False),
        Column(names.enabled, Boolean, nullable=False),
        schema=names.schema,
    )


def detail_table(names: ShardNames, metadata: MetaData | None = None) -> Table:
    return Table(
        names.detail_table,
        metadata or MetaData(),
        Column(
            names.detail_id,
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column(names.biller_id, Integer, nullable=False),
        Column(names.created, DateTime, nullable=False),
        Column(names.response_time, Numeric(10, 2, asdecimal=False), nullable=True),
        Column(names.status_code, String(10), nullable=True),
        schema=names.schema,
    )


def occupancy_table(names: ShardNames, metadata: MetaData | None = None) -> Table:
    return Table(
        names.occupancy_table,
        metadata or MetaData(),
        Column(names.occupancy_biller_id, Integer, primary_key=True, autoincrement=False),
        Column(names.processing, Boolean, nullable=False),
        schema=names.schema,
    )


def enabled_billers_query(names: CatalogNames) -> Select:
    """Billers with the DataPump enabled, with their shard, in BillerId order."""
    t = catalog_table(names)
    return (
        select(
            t.c[names.biller_id].label("biller_id"),
            t.c[names.biller_name].label("biller_name"),
            t.c[names.shard_name].label("shard_name"),
        )
        .where(t.c[names.enabled] == True)  # noqa: E712 - SQL comparison
        .order_by(t.c[names.biller_id])
    )


def _window_filter(
    t: Table,
    names: ShardNames,
    billers,
    start: datetime,
    end: datetime,
    plain: PlainForm | None = None,
):
    """The billers' rows whose CreatedDate falls in [start, end) UTC, through the index (on the
    fast path: and the rows that are not plain, see ``ShardForm.plain``)."""
    created = t.c[names.created]
    return and_(
        t.c[names.biller_id].in_(sorted(billers)),
        plain_created_between(created, start, end, plain)
        if plain
        else created_between(created, start, end),
    )


def _hour(t: Table, names: ShardNames, form: ShardForm):
    created = t.c[names.created]
    return text_hour(created) if form.plain else hour_floor(created)


def undated_query(
    names: ShardNames, billers, start: datetime, end: datetime, verified: PlainForm | None = None
) -> Select:
    """Rows per biller whose CreatedDate is NULL or not a timestamp that could be one of
    [start, end) (see ``not_a_timestamp``; ``verified``: the fast path read [start, end) in
    this plain form): they belong to no hour, so they are counted and reported instead (only a
    SQLite shard can hold a non-timestamp)."""
    t = detail_table(names)
    created = t.c[names.created]
    ours = t.c[names.biller_id].in_(sorted(billers))
    return (
        select(t.c[names.biller_id].label("biller_id"), func.count().label("rows"))
        .where(
            or_(
                and_(ours, created.is_(None)),
                not_a_timestamp(created, start, end, verified, within=ours),
            )
        )
        .group_by(t.c[names.biller_id])
    )


def status_class(status, rt, rules: Rules):
    """Per call: 2 a timeout (also a failure), 1 another failure, 0 a success (``semantics``:
    ``is_timeout``, ``is_failed``). A StatusCode of three plain digits (nearly every call) is
    compared as text, as it is stored; only the others are trimmed and read as a number."""
    one, two, zero = literal_column("1"), literal_column("2"), literal_column("0")
    # For three digits text order is number order: the rules' codes and range as such text.
    timeouts = [str(c) for c in rules.timeout_status_codes if 100 <= c <= 999]
    timeouts += [w for w in rules.timeout_words if len(w) == 3 and w.isdigit() and w[0] != "0"]
    lo, hi = max(rules.success_min, 100), min(rules.success_max, 999)
    three_digits = [(status.in_(sorted(set(timeouts))), two)] if timeouts else []
    if lo <= hi:
        three_digits.append((status.between(str(lo), str(hi)), zero))
    text = trimmed(status)
    code = digits_as_int(text)
    return case(
        (rt >= rules.timeout_threshold_ms, two),
        (three_digit_code(status), case(*three_digits, else_=one) if three_digits else one),
        (
            or_(
                code.in_(list(rules.timeout_status_codes)),
                func.lower(text).in_([w.lower() for w in rules.timeout_words]),
            ),
            two,
        ),
        (code.between(rules.success_min, rules.success_max), zero),
        else_=one,
    )


def hourly_facts_query(
    names: ShardNames,
    rules: Rules,
    billers,
    start: datetime,
    end: datetime,
    form: ShardForm = ShardForm(),
) -> Select:
    """Additive facts per biller and hour, with the response-time sketch, computed in the shard.

    Columns: biller_id, hour, request_count, timeout_count, failed_count, response_time_count,
    total_response_time, sketch (``bucket:count,…`` — see ``bucket_counts``; NULL when the hour
    has no valid ResponseTime), irregular_rows (on the fast path, the rows that are not plain;
    else 0).

    Each call gets its status class (``status_class``) and sketch bucket; the calls are grouped
    by biller, hour, bucket and class, and one row per biller and hour leaves the shard (a
    bucket may appear once per class in its sketch). With ``form.calls_listed`` the calls are
    grouped by biller and hour only, and ``response_times`` (``call_values``) lists every valid
    call's response time in place of the sketch.
    """
    t = detail_table(names)
    rt = as_number(t.c[names.response_time], text=form.response_time_text)
    status_code = t.c[names.status_code]
    if form.status_code_numeric:
        status_code = cast(status_code, String(20))
    zero = literal_column("0")
    plain = form.plain
    odd = irregular_timestamp(t.c[names.created], plain) if plain else zero
    rows = (
        select(
            t.c[names.biller_id].label("biller_id"),
            _hour(t, names, form).label("hour"),
            odd.label("odd"),
            *(() if form.calls_listed else (sketch_bucket(rt).label("bucket"),)),
            status_class(status_code, rt, rules).label("class"),
            case((rt >= 0, rt)).label("valid_rt"),
        )
        .where(_window_filter(t, names, billers, start, end, plain))
        .subquery("r")
    )
    if form.calls_listed:
        kind = rows.c["class"]
        return select(
            rows.c.biller_id,
            rows.c.hour,
            func.count().label("request_count"),
            func.sum(case((kind == literal_column("2"), 1), else_=zero)).label("timeout_count"),
            func.sum(case((kind == zero, zero), else_=1)).label("failed_count"),
            func.count(rows.c.valid_rt).label("response_time_count"),
            func.sum(rows.c.valid_rt).label("total_response_time"),
            call_values(rows.c.valid_rt).label("response_times"),
            func.sum(rows.c.odd).label("irregular_rows"),
        ).group_by(rows.c.biller_id, rows.c.hour)
    groups = (
        select(
            rows.c.biller_id,
            rows.c.hour,
            rows.c.bucket,
            rows.c["class"],
            func.count().label("calls"),
            func.count(rows.c.valid_rt).label("valid"),
            func.sum(rows.c.valid_rt).label("total"),
            func.sum(rows.c.odd).label("odd"),
        )
        .group_by(rows.c.biller_id, rows.c.hour, rows.c.bucket, rows.c["class"])
        .subquery("g")
    )
    calls, kind = groups.c.calls, groups.c["class"]
    return select(
        groups.c.biller_id,
        groups.c.hour,
        func.sum(calls).label("request_count"),
        func.sum(case((kind == literal_column("2"), calls), else_=zero)).label("timeout_count"),
        func.sum(case((kind == zero, zero), else_=calls)).label("failed_count"),
        func.sum(groups.c.valid).label("response_time_count"),
        func.sum(groups.c.total).label("total_response_time"),
        bucket_counts(groups.c.bucket, groups.c.valid).label("sketch"),
        func.sum(groups.c.odd).label("irregular_rows"),
    ).group_by(groups.c.biller_id, groups.c.hour)


def hourly_percentiles_query(
    names: ShardNames, billers, start: datetime, end: datetime, form: ShardForm = ShardForm()
) -> Select:
    """Exact nearest-rank percentiles of valid response times per biller and hour.

    Returns one row per (biller_id, hour, rank) for the ranks of PERCENTILES, with n (the number
    of valid response times in the hour) so the caller can tell which percentile a rank is.
    """
    t = detail_table(names)
    rt = as_number(t.c[names.response_time], text=form.response_time_text)
    hour = _hour(t, names, form)
    ranked = (
        select(
            t.c[names.biller_id].label("biller_id"),
            hour.label("hour"),
            rt.label("response_time"),
            func.row_number()
            .over(partition_by=[t.c[names.biller_id], hour], order_by=rt)
            .label("rn"),
            # Same partition and order as ROW_NUMBER, so the database sorts the rows once.
            func.count()
            .over(partition_by=[t.c[names.biller_id], hour], order_by=rt, rows=(None, None))
            .label("n"),
        )
        .where(and_(_window_filter(t, names, billers, start, end, form.plain), rt >= 0))
        .subquery("ranked")
    )
    # Integer arithmetic for ceil(p * n / 100): the same on SQL Server, PostgreSQL and SQLite.
    ranks = [ranked.c.rn == literal_column(f"({p} * ranked.n + 99) / 100") for p in PERCENTILES]
    return select(
        ranked.c.biller_id, ranked.c.hour, ranked.c.rn, ranked.c.n, ranked.c.response_time
    ).where(or_(*ranks))


#: A target of the guided statement: (biller, hour as ``json_hour``, sketch bucket, rank of the
#: call within the bucket) -> the (partial's key, percentile) pairs it answers.
Targets = dict[tuple[int, str, int, int], list[tuple[tuple[int, datetime], int]]]


def percentile_targets(
    partials: dict[tuple[int, datetime], Partial], hours: dict[tuple[int, datetime], object]
) -> Targets | None:
    """Where each exact percentile lies, from the hour's sketch: the nearest-rank call of the
    percentile is in the bucket whose counts, added up from the lowest, first reach its rank,
    at rank (its rank - the calls of the lower buckets) within it. ``hours``: each partial's
    hour as the shard returned it. None when a sketch does not add up to the hour's valid
    response times (the statement that reads every call decides then)."""
    import numpy as np

    targets: Targets = {}
    for key, p in partials.items():
        n = p.response_time_count
        if not n:
            continue
        counts = p.sketch.counts
        buckets = np.fromiter(counts, dtype=np.int64, count=len(counts))
        order = np.argsort(buckets)
        buckets = buckets[order]
        calls = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))[order]
        upto = np.cumsum(calls)
        if not len(upto) or upto[-1] != n:
            return None
        ranks = [nearest_rank(n, q) for q in PERCENTILES]
        # The first bucket whose calls, added up from the lowest, reach the rank.
        at = np.searchsorted(upto, ranks)
        hour = json_hour(hours[key])
        for q, rank, i in zip(PERCENTILES, ranks, at.tolist(), strict=True):
            below = int(upto[i] - calls[i])
            targets.setdefault((key[0], hour, int(buckets[i]), rank - below), []).append((key, q))
    return targets


def guided_percentiles_query(
    names: ShardNames,
    billers,
    start: datetime,
    end: datetime,
    targets: Targets,
    form: ShardForm = ShardForm(),
) -> Select:
    """The calls at ``targets``' ranks within their buckets: the exact percentiles of
    ``hourly_percentiles_query``, with only the calls of the targets' buckets sorted (2-5 % of
    the hour's calls; the shard's other calls are read once and kept out by one lookup each).

    Returns one row per target: biller_id, hour, bucket, rn (the rank in the bucket), n (the
    bucket's valid response times, to compare with the sketch's) and response_time. The
    targets travel as one JSON parameter (``among_json_rows``).
    """
    t = detail_table(names)
    rt = as_number(t.c[names.response_time], text=form.response_time_text)
    hour, bucket, biller = _hour(t, names, form), sketch_bucket(rt), t.c[names.biller_id]
    rows = bindparam(
        "targets",
        json.dumps(
            [{"b": b, "h": h, "k": k, "r": r} for b, h, k, r in targets], separators=(",", ":")
        ),
        type_=String(),
    )
    cell = (("b", "int"), ("h", "hour"), ("k", "int"))
    window = [biller, hour, bucket]
    ranked = (
        select(
            biller.label("biller_id"),
            hour.label("hour"),
            bucket.label("bucket"),
            rt.label("response_time"),
            func.row_number().over(partition_by=window, order_by=rt).label("rn"),
            # Same partition and order as ROW_NUMBER, so the database sorts the rows once.
            func.count().over(partition_by=window, order_by=rt, rows=(None, None)).label("n"),
        )
        .where(
            and_(
                _window_filter(t, names, billers, start, end, form.plain),
                rt >= 0,
                among_json_rows(window, cell, rows),
            )
        )
        .subquery("ranked")
    )
    c = ranked.c
    return select(c.biller_id, c.hour, c.bucket, c.rn, c.n, c.response_time).where(
        among_json_rows([c.biller_id, c.hour, c.bucket, c.rn], (*cell, ("r", "int")), rows)
    )


def fold_guided_percentiles(
    partials: dict[tuple[int, datetime], Partial], rows, targets: Targets
) -> bool:
    """The exact percentiles of ``guided_percentiles_query``'s rows into ``partials``; False
    (nothing trustworthy) unless every target got its one call and every bucket as many calls
    as the sketch counted: the shard changed between the statements."""
    answered = set()
    for row in rows:
        target = (int(row.biller_id), json_hour(row.hour), int(row.bucket), int(row.rn))
        answers = targets.get(target)
        if answers is None or target in answered:
            return False
        for key, q in answers:
            p = partials[key]
            if p.sketch.counts.get(target[2]) != int(row.n):
                return False
            p.exact_percentiles[q] = round2(row.response_time)
        answered.add(target)
    return len(answered) == len(targets)


def sample_created_query(names: ShardNames, billers, start: datetime, end: datetime) -> Select:
    """One CreatedDate of the window as stored (SQLite text): which plain form the fast path
    tries (see ``ShardForm.plain``)."""
    t = detail_table(names)
    return (
        select(type_coerce(t.c[names.created], String).label("created"))
        .where(_window_filter(t, names, billers, start, end))
        .limit(1)
    )


def changed_cells_query(names: ShardNames, after_id: int, pending=()) -> Select:
    """The (biller, hour) cells that received rows with an Id beyond ``after_id`` (or one of the
    ``pending`` Ids below it), with their row count and highest Id: a range scan of the
    clustered key (DataPumpDetailId)."""
    t = detail_table(names)
    ids = t.c[names.detail_id]
    hour = hour_floor(t.c[names.created])
    where = ids > after_id
    if pending:
        where = or_(where, ids.in_(sorted(pending)))
    return (
        select(
            t.c[names.biller_id].label("biller_id"),
            hour.label("hour"),
            func.count().label("rows"),
            func.max(ids).label("max_id"),
        )
        .where(where)
        .group_by(t.c[names.biller_id], hour)
    )


def ids_query(names: ShardNames, above: int, up_to: int) -> Select:
    """The Ids in (above, up_to]: which of the last Ids exist (the others are pending)."""
    t = detail_table(names)
    ids = t.c[names.detail_id]
    return select(ids.label("id")).where(and_(ids > above, ids <= up_to))


def recent_cells_query(names: ShardNames, billers, since: datetime) -> Select:
    """A first look at a shard: the cells with rows created since ``since`` (through the
    (BillerId, CreatedDate) index), with their highest Id."""
    t = detail_table(names)
    hour = hour_floor(t.c[names.created])
    return (
        select(
            t.c[names.biller_id].label("biller_id"),
            hour.label("hour"),
            func.count().label("rows"),
            func.max(t.c[names.detail_id]).label("max_id"),
        )
        .where(
            and_(
                t.c[names.biller_id].in_(sorted(billers)),
                created_between(t.c[names.created], since, datetime(9999, 1, 1)),
            )
        )
        .group_by(t.c[names.biller_id], hour)
    )


def max_id_query(names: ShardNames) -> Select:
    """The shard's highest DataPumpDetailId (the clustered key's last entry)."""
    t = detail_table(names)
    return select(func.max(t.c[names.detail_id]).label("max_id"))


def cell_counts_query(names: ShardNames, billers, start: datetime, end: datetime) -> Select:
    """Rows per biller and hour in [start, end), through the (BillerId, CreatedDate) index: what
    reconciliation compares with the warehouse's RequestCount."""
    t = detail_table(names)
    hour = hour_floor(t.c[names.created])
    return (
        select(
            t.c[names.biller_id].label("biller_id"), hour.label("hour"), func.count().label("rows")
        )
        .where(_window_filter(t, names, billers, start, end))
        .group_by(t.c[names.biller_id], hour)
    )


def processing_query(names: ShardNames, billers) -> Select:
    """The Processing flag of the given billers (a biller with no row is not busy)."""
    t = occupancy_table(names)
    return select(
        t.c[names.occupancy_biller_id].label("biller_id"), t.c[names.processing].label("processing")
    ).where(t.c[names.occupancy_biller_id].in_(sorted(billers)))


def shard_form(
    column_types: dict[str, object], names: ShardNames, dialect: str | None = None
) -> ShardForm:
    """The form of a shard's detail table from its reflected column types (SQLAlchemy types)
    and its database (``dialect``: a SQLite shard lists every call's bucket, see
    ``ShardForm.calls_listed``)."""

    def is_text(name: str) -> bool:
        return isinstance(column_types.get(name.lower()), String)

    status = column_types.get(names.status_code.lower())
    return ShardForm(
        response_time_text=is_text(names.response_time),
        status_code_numeric=status is not None and not isinstance(status, String),
        calls_listed=dialect == "sqlite",
    )


def fold_hourly_rows(
    fact_rows, percentile_rows, window: tuple[datetime, datetime] | None = None
) -> dict[tuple[int, datetime], Partial]:
    """Partials per (biller, hour) from the rows of the two shard queries above."""
    partials = fold_facts(fact_rows, window)
    fold_percentiles(partials, percentile_rows, window)
    return partials


def _fast_hour(value, window: tuple[datetime, datetime]) -> datetime:
    """A fast-path hour, which must be a real hour of the window (else the general path reads
    the window: SQLite's own date functions decide what an odd value means)."""
    try:
        hour = as_naive_utc(value)
    except (TypeError, ValueError):
        raise IrregularTimestamps(f"CreatedDate hour {value!r}") from None
    if not window[0] <= hour < window[1] or hour.minute or hour.second or hour.microsecond:
        raise IrregularTimestamps(f"CreatedDate hour {value!r} outside {window}")
    return hour


def fold_facts(
    fact_rows,
    window: tuple[datetime, datetime] | None = None,
    hours: dict[tuple[int, datetime], object] | None = None,
):
    """Partials per (biller, hour) from ``hourly_facts_query``'s rows (into ``hours``: each
    one's hour as the shard returned it). With ``window`` (the fast path), a row that is not
    plain or an hour that is not one of the window's raises ``IrregularTimestamps``. Rows that
    list their calls' response times (``ShardForm.calls_listed``) give their partials' sketches
    and exact percentiles too."""
    partials: dict[tuple[int, datetime], Partial] = {}
    listed: dict[tuple[int, datetime], list] = {}
    for row in fact_rows:
        if window is None:
            hour = as_naive_utc(row.hour)
        elif row.irregular_rows:
            raise IrregularTimestamps(f"{row.irregular_rows} row(s) not of the plain form")
        else:
            hour = _fast_hour(row.hour, window)
        key = (int(row.biller_id), hour)
        if hours is not None:
            hours[key] = row.hour
        p = partials.setdefault(key, Partial(exact_percentiles={q: None for q in PERCENTILES}))
        p.request_count += int(row.request_count)
        p.timeout_count += int(row.timeout_count or 0)
        p.failed_count += int(row.failed_count or 0)
        valid = int(row.response_time_count or 0)
        p.response_time_count += valid
        if row.total_response_time is not None:
            p.total_response_time += to_decimal(row.total_response_time)
        texts = getattr(row, "response_times", _NOT_LISTED)
        if texts is _NOT_LISTED:
            p.sketch.merge(Sketch.decode(row.sketch))
        elif texts:
            listed.setdefault(key, []).append((texts, valid))
    for p in partials.values():
        p.total_response_time = round2(p.total_response_time)
    if listed:
        keys = list(listed)
        groups = [",".join(t for t, _ in listed[k]) for k in keys]
        sizes = [sum(n for _, n in listed[k]) for k in keys]
        for key, (sketch, exact) in zip(keys, calls_summary(groups, sizes), strict=True):
            partials[key].sketch, partials[key].exact_percentiles = sketch, exact
    return partials


_NOT_LISTED = object()


def fold_percentiles(
    partials: dict[tuple[int, datetime], Partial],
    percentile_rows,
    window: tuple[datetime, datetime] | None = None,
) -> None:
    """The exact percentiles of ``hourly_percentiles_query``'s rows into ``partials``."""
    for row in percentile_rows:
        hour = as_naive_utc(row.hour) if window is None else _fast_hour(row.hour, window)
        p = partials.get((int(row.biller_id), hour))
        if p is None:
            # Rows that arrived between the two statements: read the window again, whole.
            raise IrregularTimestamps(f"percentile rows of biller {row.biller_id} at {hour}")
        n, rn = int(row.n), int(row.rn)
        for q in PERCENTILES:
            if nearest_rank(n, q) == rn:
                p.exact_percentiles[q] = round2(row.response_time)
    return partials
