"""Expressions the three supported databases spell differently.

Constants are rendered inline (never as bind parameters) so that an expression repeated in
GROUP BY or PARTITION BY is textually identical, which SQL Server requires.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import BindParameter, ColumnElement, FunctionElement
from sqlalchemy.types import BigInteger, Boolean, DateTime, Numeric, String

from metrics_pipeline.semantics import SKETCH_LOG_GAMMA, ZERO_BUCKET


def _per_dialect(cls):
    """Class decorator: the construct has no generic SQL; each dialect registers its own."""

    @compiles(cls)
    def _default(element, compiler, **kw):
        raise NotImplementedError(f"{cls.name} is not implemented for {compiler.dialect.name}")

    return cls


@_per_dialect
class hour_floor(FunctionElement):  # noqa: N801 - SQL function style
    """The start of the UTC hour that contains a DATETIME value."""

    type = DateTime()
    inherit_cache = True
    name = "hour_floor"


@compiles(hour_floor, "mssql")
def _hour_floor_mssql(element, compiler, **kw):
    arg = compiler.process(element.clauses, **kw)
    return f"DATEADD(hour, DATEDIFF(hour, 0, {arg}), 0)"


@compiles(hour_floor, "postgresql")
def _hour_floor_pg(element, compiler, **kw):
    return f"date_trunc('hour', {compiler.process(element.clauses, **kw)})"


@compiles(hour_floor, "sqlite")
def _hour_floor_sqlite(element, compiler, **kw):
    # unixepoch() and datetime(): see "timestamps ... SQLite may store as text" below.
    seconds = _sqlite_seconds(compiler.process(element.clauses, **kw))
    return f"datetime({seconds} / 3600 * 3600, 'unixepoch')"


@_per_dialect
class digits_as_int(FunctionElement):  # noqa: N801
    """The integer value of a string made of one or more ASCII digits; NULL for anything else."""

    type = BigInteger()
    inherit_cache = True
    name = "digits_as_int"


@compiles(digits_as_int, "mssql")
def _digits_mssql(element, compiler, **kw):
    s = compiler.process(element.clauses, **kw)
    # TRY_CAST keeps the expression safe whatever order SQL Server evaluates the CASE in.
    return f"CASE WHEN {s} <> '' AND {s} NOT LIKE '%[^0-9]%' THEN TRY_CAST({s} AS BIGINT) END"


@compiles(digits_as_int, "postgresql")
def _digits_pg(element, compiler, **kw):
    s = compiler.process(element.clauses, **kw)
    return f"CASE WHEN {s} ~ '^[0-9]+$' THEN CAST({s} AS BIGINT) END"


@compiles(digits_as_int, "sqlite")
def _digits_sqlite(element, compiler, **kw):
    s = compiler.process(element.clauses, **kw)
    return f"CASE WHEN {s} <> '' AND {s} NOT GLOB '*[^0-9]*' THEN CAST({s} AS INTEGER) END"


@_per_dialect
class three_digit_code(FunctionElement):  # noqa: N801
    """True for a string of exactly three ASCII digits, the first not 0 ('200'): its text
    compares as its number does, with no trimming or conversion."""

    type = Boolean()
    inherit_cache = True
    name = "three_digit_code"
    _is_implicitly_boolean = True


#: The test per dialect: LIKE's and GLOB's classes, a regular expression on PostgreSQL.
_THREE_DIGITS = {
    "mssql": "{} LIKE '[1-9][0-9][0-9]'",
    "postgresql": "{} ~ '^[1-9][0-9][0-9]$'",
    "sqlite": "{} GLOB '[1-9][0-9][0-9]'",
}


def _compile_three_digits(element, compiler, **kw):
    return _THREE_DIGITS[compiler.dialect.name].format(compiler.process(element.clauses, **kw))


for _dialect in _THREE_DIGITS:
    compiles(three_digit_code, _dialect)(_compile_three_digits)


@_per_dialect
class sketch_bucket(FunctionElement):  # noqa: N801
    """Log bucket of a non-negative response time (see semantics.sketch_bucket); NULL if < 0."""

    type = BigInteger()
    inherit_cache = True
    name = "sketch_bucket"


def _bucket_sql(value: str, ln: str, ceil: str, real: str) -> str:
    return (
        f"CASE WHEN {value} > 0 THEN CAST({ceil}({ln}(CAST({value} AS {real})) / "
        f"{SKETCH_LOG_GAMMA!r}) AS BIGINT) WHEN {value} = 0 THEN {ZERO_BUCKET} END"
    )


@compiles(sketch_bucket, "mssql")
def _bucket_mssql(element, compiler, **kw):
    return _bucket_sql(compiler.process(element.clauses, **kw), "LOG", "CEILING", "FLOAT")


@compiles(sketch_bucket, "postgresql")
def _bucket_pg(element, compiler, **kw):
    return _bucket_sql(compiler.process(element.clauses, **kw), "ln", "ceil", "DOUBLE PRECISION")


@compiles(sketch_bucket, "sqlite")
def _bucket_sqlite(element, compiler, **kw):
    return _bucket_sql(compiler.process(element.clauses, **kw), "ln", "ceil", "REAL")


def trimmed(column: ColumnElement) -> ColumnElement:
    """Spaces stripped from both ends, spelled the same on all three databases."""
    return func.ltrim(func.rtrim(column))


@_per_dialect
class bucket_counts(FunctionElement):  # noqa: N801
    """Aggregate: the (bucket, count) pairs of a group as one ``bucket:count,…`` string
    (read back by ``semantics.Sketch.decode``).

    Pairs whose bucket is NULL are left out; the string is NULL when none is left. A bucket may
    appear more than once (the caller adds the counts up). It lets a shard return one row per
    biller and hour instead of one per sketch bucket.
    """

    type = String()
    inherit_cache = True
    name = "bucket_counts"


def _pair_args(element, compiler, **kw) -> tuple[str, ...]:
    return tuple(compiler.process(c, **kw) for c in element.clauses)


@compiles(bucket_counts, "mssql")
def _bucket_counts_mssql(element, compiler, **kw):
    bucket, count = _pair_args(element, compiler, **kw)
    # VARCHAR(MAX) input lifts STRING_AGG's 8,000-byte limit; CONCAT would turn NULL into ''.
    return (
        f"STRING_AGG(CASE WHEN {bucket} IS NOT NULL THEN "
        f"CAST(CONCAT({bucket}, ':', {count}) AS VARCHAR(MAX)) END, ',')"
    )


@compiles(bucket_counts, "postgresql")
def _bucket_counts_pg(element, compiler, **kw):
    bucket, count = _pair_args(element, compiler, **kw)
    return f"string_agg(CAST({bucket} AS VARCHAR) || ':' || CAST({count} AS VARCHAR), ',')"


@compiles(bucket_counts, "sqlite")
def _bucket_counts_sqlite(element, compiler, **kw):
    bucket, count = _pair_args(element, compiler, **kw)
    return f"group_concat({bucket} || ':' || {count}, ',')"


@_per_dialect
class call_values(FunctionElement):  # noqa: N801
    """Aggregate: every non-NULL response time of a group as one ``v,v,…`` string, each value
    written so that it reads back as the same number (``semantics.calls_summary``); NULL when
    the group has none.

    The SQLite shard's statement lists its calls' response times: the sketch and the exact
    percentiles are computed from them in NumPy, in one statement, where grouping by bucket in
    the shard (``bucket_counts``) makes a group of nearly every call at a few hundred calls per
    biller-hour (SQLite takes a lock shared by the whole process per group, for its memory
    statistics: shards read in parallel threads waited for each other) and the exact
    percentiles take a second statement that sorts the calls again. SQLite's ``quote`` writes
    a REAL with 15 digits, or all 20 when 15 would not read back as the same number."""

    type = String()
    inherit_cache = True
    name = "call_values"


@compiles(call_values, "mssql")
def _call_values_mssql(element, compiler, **kw):
    # CONVERT style 3: a float with all 17 significant digits (SQL Server 2016 and later).
    value = compiler.process(element.clauses, **kw)
    return f"STRING_AGG(CONVERT(VARCHAR(MAX), CAST({value} AS FLOAT), 3), ',')"


@compiles(call_values, "postgresql")
def _call_values_pg(element, compiler, **kw):
    # PostgreSQL 12 and later write a float8 in the shortest form that reads back the same.
    return (
        f"string_agg(CAST(CAST({compiler.process(element.clauses, **kw)} AS FLOAT8) AS TEXT), ',')"
    )


@compiles(call_values, "sqlite")
def _call_values_sqlite(element, compiler, **kw):
    value = compiler.process(element.clauses, **kw)
    return f"group_concat(CASE WHEN {value} IS NOT NULL THEN quote({value}) END, ',')"


# --- timestamps and numbers a SQLite shard may store as text --------------------------------------
#
# SQL Server and PostgreSQL shards have typed DATETIME / NUMERIC columns. A SQLite shard written
# by another program may hold CreatedDate as text in any ISO form ('2025-04-06 10:00:00',
# '...T10:00:00.000', '...10:00:00.999999Z', '...10:00:00+02:00') and junk in ResponseTime ('abc',
# ''). SQLite's date functions read every ISO form and apply the offset; unixepoch() gives
# comparable UTC seconds without building text (strftime() allocates per row behind SQLite's global
# memory mutex, which serialises the threads reading shards in parallel). A wide range on the raw
# column keeps the (BillerId, CreatedDate) index in use.
#
# SQLite rounds a fraction of a second to the millisecond before anything else (23:59:59.9995 is
# the next day's 00:00:00.000). Hour bounds are whole seconds, so the fraction is dropped instead
# (what follows the seconds, digits and '.', up to a zone): every row falls in the second, hence
# the hour, it was written in, at whatever precision it was stored.

#: Widest UTC offset a timestamp may carry (UTC-12 .. UTC+14).
MAX_OFFSET = timedelta(hours=14)


def _sqlite_seconds(column: str) -> str:
    """Whole UTC seconds since 1970 of a timestamp in any ISO text form, its fraction dropped
    (never rounded into the next second); NULL if it is not one."""
    return f"unixepoch(substr({column}, 1, 19) || ltrim(substr({column}, 20), '.0123456789'))"


def _epoch(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1)) // timedelta(seconds=1)


def _sqlite_in_range(column: str, start: datetime, end: datetime) -> str:
    """``start <= column < end`` in UTC for a text timestamp of any form. Window bounds are whole
    seconds; a bound with a fraction (a "since now" look-back) is widened to its second."""
    first = _epoch(start)
    last = _epoch(end) - (1 if end.microsecond == 0 else 0)
    return f"{_sqlite_seconds(column)} BETWEEN {first} AND {last}"


class created_between(ColumnElement):  # noqa: N801
    """``start <= column < end`` for a timestamp column, in UTC, whatever form SQLite stores."""

    type = Boolean()
    inherit_cache = False
    _is_implicitly_boolean = True  # a predicate: no "= 1" appended on SQL Server and SQLite

    def __init__(self, column: ColumnElement, start: datetime, end: datetime):
        self.column, self.start, self.end = column, start, end


@compiles(created_between)
def _created_between(element, compiler, **kw):
    c = element.column
    return compiler.process(and_(c >= element.start, c < element.end), **kw)


@compiles(created_between, "sqlite")
def _created_between_sqlite(element, compiler, **kw):
    c = compiler.process(element.column, **kw)
    # ' ' sorts before 'T': the lower bound in the space form and the upper in the T form take in
    # both separators; the offset margin takes in local times of any zone. This range on the raw
    # column keeps the (BillerId, CreatedDate) index in use.
    lo = (element.start - MAX_OFFSET).strftime("%Y-%m-%d %H:%M:%S")
    hi = (element.end + MAX_OFFSET).strftime("%Y-%m-%dT%H:%M:%S")
    exact = _sqlite_in_range(c, element.start, element.end)
    return f"({c} >= '{lo}' AND {c} < '{hi}' AND {exact})"


# --- the fast path for a SQLite shard whose text timestamps are plain ----------------------------
#
# Most SQLite shards store every CreatedDate in one plain form: 'YYYY-MM-DD HH:MM:SS' (or 'T'),
# the same number of fractional digits on every row, no zone. For such rows the UTC hour is the
# first 13 characters and a window is a text range, as a competent engineer would write it by
# hand; unixepoch() per row makes the general statements about 1.6x slower. The fast statements
# read the margin-widened range (as the general ones do) and keep every row that is not of the
# form, which ``irregular_timestamp`` counts (one GLOB per row): a window with any such row
# (another separator or fraction, a zone, junk) is read again by the general statements, so the
# figures are the same whichever path read them.

_DIGIT = "[0-9]"
#: A plain timestamp as Python reads the probe row: date, ' ' or 'T', time, optional fraction.
_PLAIN_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}([ T])\d{2}:\d{2}:\d{2}(?:\.(\d{1,9}))?")


@dataclass(frozen=True)
class PlainForm:
    """One plain text form of CreatedDate: the separator between date and time and the number
    of fractional digits (0: none). A shard written by one program holds one such form; rows of
    any other form (another fraction length included) are irregular to the fast path."""

    separator: str
    fraction_digits: int

    @classmethod
    def of(cls, text: object) -> "PlainForm | None":
        match = _PLAIN_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            return None
        return cls(match.group(1), len(match.group(2) or ""))

    @property
    def glob(self) -> str:
        """One GLOB for the whole form, digits checked where SQLite's date functions check them
        (month, day, hour, minute, second); the cheapest exact test per row."""
        pattern = (
            f"{_DIGIT * 4}-[0-1]{_DIGIT}-[0-3]{_DIGIT}"
            f"{self.separator}[0-2]{_DIGIT}:[0-5]{_DIGIT}:[0-5]{_DIGIT}"
        )
        return pattern + ("." + _DIGIT * self.fraction_digits if self.fraction_digits else "")

    def bound(self, instant: datetime) -> str:
        """A whole-second window bound as text of this form (fraction digits need not follow:
        'HH:MM:SS' sorts before 'HH:MM:SS.fff')."""
        return instant.strftime(f"%Y-%m-%d{self.separator}%H:%M:%S")


def _plain_sqlite(column: str, form: PlainForm) -> str:
    return f"{column} GLOB '{form.glob}'"


class plain_created_between(ColumnElement):  # noqa: N801
    """A SQLite shard's fast window: the margin-widened text range (as ``created_between``) and,
    within it, the plain rows of [start, end) by text comparison plus every row that is not plain
    (so that ``irregular_timestamp`` sees them)."""

    type = Boolean()
    inherit_cache = False
    _is_implicitly_boolean = True

    def __init__(self, column: ColumnElement, start: datetime, end: datetime, form: PlainForm):
        self.column, self.start, self.end, self.form = column, start, end, form


# A typed DATETIME column (SQL Server, PostgreSQL) holds nothing but plain timestamps: the fast
# constructs are the general ones there, so every statement compiles for every shard dialect.
@compiles(plain_created_between)
def _plain_between_typed(element, compiler, **kw):
    c = element.column
    return compiler.process(and_(c >= element.start, c < element.end), **kw)


@compiles(plain_created_between, "sqlite")
def _plain_between_sqlite(element, compiler, **kw):
    c = compiler.process(element.column, **kw)
    lo = (element.start - MAX_OFFSET).strftime("%Y-%m-%d %H:%M:%S")
    hi = (element.end + MAX_OFFSET).strftime("%Y-%m-%dT%H:%M:%S")
    first, last = element.form.bound(element.start), element.form.bound(element.end)
    plain = _plain_sqlite(c, element.form)
    return (
        f"({c} >= '{lo}' AND {c} < '{hi}' AND "
        f"(({c} >= '{first}' AND {c} < '{last}') OR NOT {plain}))"
    )


class irregular_timestamp(FunctionElement):  # noqa: N801
    """1 for a row that is not a timestamp of the plain ``form``, else 0 (SQLite)."""

    type = BigInteger()
    inherit_cache = False
    name = "irregular_timestamp"

    def __init__(self, column: ColumnElement, form: PlainForm):
        self.form = form
        super().__init__(column)


@compiles(irregular_timestamp)
def _irregular_typed(element, compiler, **kw):
    return "0"


@compiles(irregular_timestamp, "sqlite")
def _irregular_sqlite(element, compiler, **kw):
    plain = _plain_sqlite(compiler.process(element.clauses, **kw), element.form)
    return f"CASE WHEN {plain} THEN 0 ELSE 1 END"


class text_hour(FunctionElement):  # noqa: N801
    """The hour of a plain text timestamp as text ('YYYY-MM-DD HH'), read as a naive UTC hour."""

    type = String()
    inherit_cache = True
    name = "text_hour"


@compiles(text_hour)
def _text_hour_typed(element, compiler, **kw):
    return compiler.process(hour_floor(*element.clauses), **kw)


@compiles(text_hour, "sqlite")
def _text_hour_sqlite(element, compiler, **kw):
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 13)"


class not_a_timestamp(ColumnElement):  # noqa: N801
    """True for a non-NULL value that is not a timestamp and could be one of the window
    [start, end) (only SQLite can hold one): text that does not start with a digit, wherever it
    sorts, and within the window's margin-widened text range, text SQLite cannot read as a time.
    Index range seeks, never a scan of the shard's history: junk that sorts elsewhere among
    the timestamps is counted by the read of its own window."""

    type = Boolean()
    inherit_cache = False
    _is_implicitly_boolean = True

    def __init__(
        self,
        column: ColumnElement,
        start: datetime,
        end: datetime,
        verified: PlainForm | None = None,
        within: ColumnElement | None = None,
    ):
        self.column, self.start, self.end = column, start, end
        #: The fast path read [start, end) in this form: no row of the widened range is of
        #: another form and every plain one of [start, end) is a real hour, so only the margins
        #: outside [start, end) are left to look at.
        self.verified = verified
        #: A condition on the rows (the billers) repeated in each range, so that an index on
        #: (BillerId, CreatedDate) seeks every range of every biller instead of reading all
        #: their rows.
        self.within = within


@compiles(not_a_timestamp)
def _not_a_timestamp_typed(element, compiler, **kw):
    return "1 = 0"


@compiles(not_a_timestamp, "sqlite")
def _not_a_timestamp_sqlite(element, compiler, **kw):
    c = compiler.process(element.column, **kw)
    lo = (element.start - MAX_OFFSET).strftime("%Y-%m-%d %H:%M:%S")
    hi = (element.end + MAX_OFFSET).strftime("%Y-%m-%dT%H:%M:%S")
    seconds = _sqlite_seconds(c)
    ranges = [(lo, hi)]
    if element.verified is not None:
        first, last = element.verified.bound(element.start), element.verified.bound(element.end)
        ranges = [(lo, first), (last, hi)]
    # '0-' rather than '0': a DATETIME column's numeric affinity would turn '0' into the number
    # 0. Numbers sort before all text; one is a timestamp if SQLite reads it as a Julian day.
    # In the window's range, `unixepoch(c) IS NULL` first: it reads every usual form at a third
    # of the cost of the general reading, which then decides only for the rest. Every term of
    # the OR is a range of the column, so that SQLite seeks each one in the index.
    unreadable = f"unixepoch({c}) IS NULL AND {seconds} IS NULL"
    terms = [
        f"{c} < '0-' AND (typeof({c}) = 'text' OR {seconds} IS NULL)",
        f"{c} >= ':'",
        *(f"{c} >= '{a}' AND {c} < '{b}' AND {unreadable}" for a, b in ranges),
    ]
    if element.within is not None:
        within = compiler.process(element.within, **kw)
        terms = [f"{within} AND {t}" for t in terms]
    return "(" + " OR ".join(f"({t})" for t in terms) + ")"


#: The one rule for a number stored as text (a ResponseTime column of a text type): an unsigned
#: decimal, digits with at most one '.', spaces around allowed; anything else ('abc', '', '1e3',
#: '-5') is no number (semantics.number_from_text is the same rule in Python).
NUMBER_PATTERN_PG = r"^ *([0-9]+\.?[0-9]*|\.[0-9]+) *$"


def _text_number_like(s: str, glob: str) -> str:
    """The rule above with LIKE/GLOB classes (SQL Server, SQLite): no character but digits and
    '.', at most one '.', at least one digit."""
    if glob == "GLOB":
        return (
            f"{s} <> '' AND {s} NOT GLOB '*[^0-9.]*' AND {s} NOT GLOB '*.*.*' "
            f"AND {s} GLOB '*[0-9]*'"
        )
    return f"{s} <> '' AND {s} NOT LIKE '%[^0-9.]%' AND {s} NOT LIKE '%.%.%' AND {s} LIKE '%[0-9]%'"


class as_number(FunctionElement):  # noqa: N801
    """The value when it is a number, else NULL. ``text`` is True for a column of a text type
    (read by the rule above); SQLite tells each value apart (its columns hold any type)."""

    type = Numeric(asdecimal=False)
    inherit_cache = False
    name = "as_number"

    def __init__(self, column: ColumnElement, text: bool = False):
        self.text = text
        super().__init__(column)


@compiles(as_number, "mssql")
def _as_number_mssql(element, compiler, **kw):
    v = compiler.process(element.clauses, **kw)
    if not element.text:
        return v
    s = f"LTRIM(RTRIM({v}))"
    # TRY_CAST keeps the expression safe whatever order SQL Server evaluates the CASE in.
    return f"CASE WHEN {_text_number_like(s, 'LIKE')} THEN TRY_CAST({s} AS FLOAT) END"


@compiles(as_number, "postgresql")
def _as_number_pg(element, compiler, **kw):
    v = compiler.process(element.clauses, **kw)
    if not element.text:
        return v
    return f"CASE WHEN {v} ~ '{NUMBER_PATTERN_PG}' THEN CAST({v} AS DOUBLE PRECISION) END"


@compiles(as_number, "sqlite")
def _as_number_sqlite(element, compiler, **kw):
    v = compiler.process(element.clauses, **kw)
    s = f"trim({v})"
    # Text (and blobs) sort after every number in SQLite, and 9e999 is its infinity: only an
    # integer or a real is <= it, cheaper per row than typeof(), which builds a string. The unary
    # + drops the column's affinity: a VARCHAR column would otherwise turn 9e999 into text and
    # compare '5' <= 'Inf' as text. Text is read by the rule above (CAST alone reads '5abc' as 5
    # and 'abc' as 0).
    return (
        f"CASE WHEN +{v} <= 9e999 THEN {v} "
        f"WHEN {_text_number_like(s, 'GLOB')} THEN CAST({s} AS REAL) END"
    )


# --- rows sent as one JSON parameter -----------------------------------------------------------


class among_json_rows(ColumnElement):  # noqa: N801
    """True when the tuple ``columns`` equals one row of ``rows``: a JSON array of objects sent as
    one bind parameter, whatever the number of rows (SQL Server takes at most 2,100 parameters).

    ``fields`` name each column's field in the objects, with its kind: ``int`` or ``hour`` (an
    hour as the shard's own hour expression returns it, as text: see ``json_hour``). SQLite and
    PostgreSQL test row-value membership, which they answer with one indexed or hashed lookup per
    row (a correlated EXISTS or a join is planned as a scan of the JSON per row on SQLite, 300x
    slower); SQL Server, which has no row values, a correlated EXISTS over OPENJSON (a semi-join).
    SQLite needs its JSON functions (built in since 3.38), SQL Server compatibility level 130."""

    type = Boolean()
    inherit_cache = False
    _is_implicitly_boolean = True

    def __init__(self, columns, fields: tuple[tuple[str, str], ...], rows: BindParameter):
        self.columns, self.fields, self.rows = list(columns), fields, rows


#: The SQL type of a JSON field of each kind, where the database needs one.
_JSON_KINDS = {
    "postgresql": {"int": "BIGINT", "hour": "TIMESTAMP"},
    "mssql": {"int": "BIGINT", "hour": "DATETIME2"},
}


def _json_parts(element, compiler, **kw) -> tuple[list[str], list[str], str]:
    columns = [compiler.process(c, **kw) for c in element.columns]
    names = [name for name, _ in element.fields]
    return columns, names, compiler.process(element.rows, **kw)


@compiles(among_json_rows, "sqlite")
def _among_json_sqlite(element, compiler, **kw):
    columns, names, rows = _json_parts(element, compiler, **kw)
    fields = ", ".join(f"json_extract(value, '$.{n}')" for n in names)
    return f"({', '.join(columns)}) IN (SELECT {fields} FROM json_each({rows}))"


@compiles(among_json_rows, "postgresql")
def _among_json_pg(element, compiler, **kw):
    columns, names, rows = _json_parts(element, compiler, **kw)
    kinds = _JSON_KINDS["postgresql"]
    record = ", ".join(f"{n} {kinds[k]}" for n, k in element.fields)
    return (
        f"({', '.join(columns)}) IN (SELECT {', '.join(f'j.{n}' for n in names)} "
        f"FROM json_to_recordset(CAST({rows} AS JSON)) AS j({record}))"
    )


@compiles(among_json_rows, "mssql")
def _among_json_mssql(element, compiler, **kw):
    columns, names, rows = _json_parts(element, compiler, **kw)
    kinds = _JSON_KINDS["mssql"]
    schema = ", ".join(f"{n} {kinds[k]} '$.{n}'" for n, k in element.fields)
    equal = " AND ".join(f"j.{n} = {c}" for n, c in zip(names, columns, strict=True))
    return f"EXISTS (SELECT 1 FROM OPENJSON({rows}) WITH ({schema}) AS j WHERE {equal})"


def json_hour(value: object) -> str:
    """An hour as the shard returned it (plain text on SQLite's fast path, else a datetime), as
    the text ``among_json_rows`` sends back for it."""
    return value if isinstance(value, str) else value.isoformat(sep=" ")  # type: ignore[attr-defined]
