"""The statements an export sends, over SQLAlchemy Core with bound parameters.

Also valid T-SQL: ``.limit()`` becomes TOP, the keyset condition is spelled out with AND/OR
(no row-value comparison), lists are plain IN of scalars.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, func, or_, select

from metrics_pipeline.api.exports.objects import PublishedObject


def window_conditions(
    obj: PublishedObject,
    table: Table,
    start: datetime,
    end: datetime,
    entities: Sequence[int] | None,
) -> list[ColumnElement]:
    """``time in [start, end)`` and, when given, ``entity IN (...)``."""
    time = table.c[obj.time_column]
    conditions = [time >= start, time < end]
    if entities is not None:
        conditions.append(table.c[obj.entity_column].in_(sorted(entities)))
    return conditions


def snapshot_query(
    obj: PublishedObject,
    table: Table,
    start: datetime,
    end: datetime,
    entities: Sequence[int] | None,
) -> Select | None:
    """The largest snapshot id among the rows of the window (None: the object has no such
    column, there is nothing to bound)."""
    if obj.snapshot_column is None:
        return None
    conditions = window_conditions(obj, table, start, end, entities)
    return select(func.max(table.c[obj.snapshot_column])).where(and_(*conditions))


def after_key(table: Table, key: Sequence[str], values: Sequence[Any]) -> ColumnElement:
    """Rows strictly after ``values`` in ``key`` order: (k1 > v1) OR (k1 = v1 AND k2 > v2) ..."""
    terms = []
    for i, name in enumerate(key):
        equal = [table.c[key[j]] == values[j] for j in range(i)]
        terms.append(and_(*equal, table.c[name] > values[i]))
    return or_(*terms)


def page_query(
    obj: PublishedObject,
    table: Table,
    start: datetime,
    end: datetime,
    entities: Sequence[int] | None,
    snapshot: Any,
    after: Sequence[Any] | None,
    limit: int,
) -> Select:
    """At most ``limit`` rows of the window in key order, after the key ``after`` (None: from the
    first), none written after the snapshot."""
    conditions = window_conditions(obj, table, start, end, entities)
    if obj.snapshot_column is not None:
        if snapshot is None:
            # The window was empty at the first call: every row there now came afterwards.
            conditions.append(table.c[obj.snapshot_column].is_(None))
        else:
            conditions.append(table.c[obj.snapshot_column] <= snapshot)
    if after is not None:
        conditions.append(after_key(table, obj.key, after))
    order = [table.c[name] for name in obj.key]
    return select(table).where(and_(*conditions)).order_by(*order).limit(limit)
