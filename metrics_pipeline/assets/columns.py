"""Every family's column schemas: each column's description is its meaning and the columns it is
computed from (``meaning ← sources``), the lineage open-source Dagster shows in the Columns tab."""

from collections.abc import Mapping

from dagster import TableColumn, TableSchema
from sqlalchemy import Table

#: The sources of a column nothing upstream computes.
WRITTEN_BY_THE_PIPELINE = "written by the pipeline"


def describe(meaning: str, sources: str | None) -> str:
    """``meaning ← sources`` (``written by the pipeline`` when there are none)."""
    return f"{meaning} ← {sources or WRITTEN_BY_THE_PIPELINE}"


def table_schema(table: Table, descriptions: Mapping[str, str]) -> TableSchema:
    """The ``dagster/column_schema`` of a warehouse table: its columns, types and descriptions."""
    return TableSchema(
        columns=[
            TableColumn(c.name, str(c.type), description=descriptions.get(c.name, ""))
            for c in table.columns
        ]
    )
