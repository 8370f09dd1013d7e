"""The raw tables the pipeline reads, as external assets so they appear in the lineage."""

from dagster import AssetSpec, TableColumn, TableSchema

from metrics_pipeline.datapump.assets.common import (
    CATALOG_BILLERS,
    OWNERS,
    SHARD_DETAIL,
    SHARD_OCCUPANCY,
)

source_specs = [
    AssetSpec(
        key=CATALOG_BILLERS,
        description=(
            "Catalog of billers: the ones with IsDataPumpEnabled = 1 are aggregated, each read "
            "from the shard database named by ShardName. Billers are rows inside each time "
            "partition: every run reads the catalog as it is then."
        ),
        group_name="sources",
        owners=OWNERS,
        kinds={"sqlserver"},
        metadata={
            "dagster/column_schema": TableSchema(
                columns=[
                    TableColumn("BillerId", "INT"),
                    TableColumn("BillerName", "NVARCHAR"),
                    TableColumn("ShardName", "NVARCHAR", description="Shard database name"),
                    TableColumn("IsDataPumpEnabled", "BIT"),
                ]
            ),
            "dagster/table_name": "BillerElasticOptions",
        },
    ),
    AssetSpec(
        key=SHARD_DETAIL,
        description=(
            "One row per web-service call made by the DataPump, in every biller shard. "
            "CreatedDate is the UTC request start; ResponseTime is in milliseconds."
        ),
        group_name="sources",
        owners=OWNERS,
        kinds={"sqlserver"},
        deps=[CATALOG_BILLERS],
        metadata={
            "dagster/column_schema": TableSchema(
                columns=[
                    TableColumn("DataPumpDetailId", "BIGINT"),
                    TableColumn("BillerId", "INT"),
                    TableColumn("CreatedDate", "DATETIME", description="UTC request start"),
                    TableColumn("ResponseTime", "DECIMAL(10,2)", description="ms, NULL allowed"),
                    TableColumn(
                        "StatusCode", "VARCHAR(10)", description="HTTP status, NULL allowed"
                    ),
                ]
            ),
            "dagster/table_name": "DataPumpDetail",
        },
    ),
    AssetSpec(
        key=SHARD_OCCUPANCY,
        description=(
            "Per-biller Processing flag in every shard: while another job holds it, the biller's "
            "rows are not read."
        ),
        group_name="sources",
        owners=OWNERS,
        kinds={"sqlserver"},
        deps=[CATALOG_BILLERS],
        metadata={
            "dagster/column_schema": TableSchema(
                columns=[TableColumn("BillerId", "INT"), TableColumn("Processing", "BIT")]
            ),
            "dagster/table_name": "BillerDataPump",
        },
    ),
]
