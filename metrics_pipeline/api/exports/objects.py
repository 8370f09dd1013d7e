"""The published objects: the warehouse tables ``/api/v2/exports/{objectName}`` serves.

Publishing a table is one entry in :data:`PUBLISHED` (see :func:`published`): the table's name,
the unique key that orders its pages, the time column ``fromDate``/``toDate`` filter on, and
optionally the entity column ``billers`` filters on and a monotone id column that bounds the
snapshot. Nothing else in the export code knows a table.
"""

from dataclasses import dataclass

from sqlalchemy import Table

from metrics_pipeline.sql.warehouse import AGGREGATES, KEY_COLUMNS, Warehouse


@dataclass(frozen=True)
class PublishedObject:
    """One exportable table."""

    #: ``objectName`` in the URL (the table's seed name).
    name: str
    #: Columns whose values are unique per row, in page order (keyset paging, never offsets).
    key: tuple[str, ...]
    #: ``fromDate`` (inclusive) and ``toDate`` (exclusive) filter on this column.
    time_column: str
    #: ``billers=1,2`` and a token's biller scope filter on this column; None: not per biller
    #: (then only all-billers tokens may export it).
    entity_column: str | None = None
    #: A column that only grows for new rows (an identity): rows above its maximum at the first
    #: call were written after the snapshot and are left out. None: no such column.
    snapshot_column: str | None = None
    #: The table when it differs from ``name``.
    table_name: str | None = None

    def table(self, wh: Warehouse) -> Table:
        name = self.table_name or self.name
        qualified = f"{wh.metadata.schema}.{name}" if wh.metadata.schema else name
        return wh.metadata.tables[qualified]


def _datapump(table: str, id_column: str) -> PublishedObject:
    return PublishedObject(
        name=table,
        key=KEY_COLUMNS,
        time_column="StartTime",
        entity_column="BillerId",
        snapshot_column=id_column,
    )


#: objectName -> object. Other families add their published tables here, e.g.
#: ``PublishedObject("CollectedMetricHourly", key=(...), time_column="StartTime",
#: snapshot_column="CollectedMetricHourlyId")``.
PUBLISHED: dict[str, PublishedObject] = {
    o.name: o for o in (_datapump(agg.table, agg.id_column) for agg in AGGREGATES)
}


def published(name: str) -> PublishedObject | None:
    return PUBLISHED.get(name)
