"""docs/lineage.md, written from the same definitions the Dagster UI shows: per aggregate asset,
each column, its description and the columns it is computed from.

Open-source Dagster shows each column's description (with its ``← sources``) in the asset's
Columns tab but does not draw ``dagster/column_lineage``; this page is the same lineage in one
place. ``python -m metrics_pipeline.lineage_doc > docs/lineage.md`` writes it;
a test fails when it is out of date.
"""

import sys

from metrics_pipeline.datapump.assets.common import asset_key, column_descriptions, column_lineage
from metrics_pipeline.semantics import LEVELS
from metrics_pipeline.sql.warehouse import AGGREGATES, build_warehouse


def render() -> str:
    tables = build_warehouse()
    lines = [
        "# Column lineage of the DataPump and availability aggregates",
        "",
        "Written by `python -m metrics_pipeline.lineage_doc` from the asset",
        "definitions (a test keeps it current). In the Dagster UI each column's description ends",
        "with the same `← sources` (asset → Overview → Columns); open-source Dagster does not",
        "draw `dagster/column_lineage` as a graph.",
        "",
    ]
    for aggregate in AGGREGATES:
        table = tables.table(aggregate)
        for level in LEVELS:
            key = asset_key(aggregate, level).to_user_string()
            lineage = column_lineage(aggregate, level).deps_by_column
            lines += [
                f"## `{key}` (table `{aggregate.table}`, TimeStampTypeId {level.id})",
                "",
                "| column | computed from | meaning |",
                "|---|---|---|",
            ]
            for column, text in column_descriptions(aggregate, level, table).items():
                meaning = text.split(" ← ")[0]
                sources = ", ".join(
                    f"`{d.asset_key.to_user_string()}.{d.column_name}`"
                    for d in lineage.get(column, ())
                )
                lines.append(f"| `{column}` | {sources or 'the pipeline'} | {meaning} |")
            lines.append("")
    lines += _availability()
    return "\n".join(lines)


def _availability() -> list[str]:
    """The availability family's aggregates, from the column sources their schemas are built
    from (the same ``meaning ← sources`` the Columns tab shows)."""
    from metrics_pipeline.availability.assets import column_sources

    lines = []
    for key, table in (
        ("availability_minute", "AvailabilityMinute"),
        ("availability_daily", "AvailabilityDaily"),
        ("availability_published", "AvailabilityPublished"),
    ):
        lines += [
            f"## `{key}` (table `{table}`)",
            "",
            "| column | computed from | meaning |",
            "|---|---|---|",
        ]
        for column, (meaning, sources) in column_sources(table).items():
            computed = ", ".join(f"`{s.strip()}`" for s in sources.split(";")) if sources else ""
            lines.append(f"| `{column}` | {computed or 'the pipeline'} | {meaning} |")
        lines.append("")
    return lines


if __name__ == "__main__":
    sys.stdout.write(render())
