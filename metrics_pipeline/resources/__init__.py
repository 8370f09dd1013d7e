"""Resources, built from the environment: EnvVar where a variable is set, the embedded default
(SQLite files in METRICS_DATA_DIR, default ./data) where it is not."""

import os
from collections.abc import Mapping
from pathlib import Path

from dagster import EnvVar

from metrics_pipeline.resources.databases import CatalogResource, ShardsResource
from metrics_pipeline.resources.warehouse import WarehouseResource

URL_VARIABLES = {
    "catalog": ("METRICS_CATALOG_URL", "catalog.db"),
    "warehouse": ("METRICS_WAREHOUSE_URL", "warehouse.db"),
    "shards": ("METRICS_SHARD_URL_TEMPLATE", "{shard}.db"),
}


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("METRICS_DATA_DIR") or "data").resolve()


def resource_urls(environ: Mapping[str, str] | None = None, resolve: bool = True) -> dict:
    """The three URLs: a variable's value (or its EnvVar when ``resolve`` is False) when it is
    set, else the embedded SQLite default."""
    environ = os.environ if environ is None else environ
    folder = data_dir(environ)
    urls = {}
    for name, (variable, filename) in URL_VARIABLES.items():
        if environ.get(variable):
            urls[name] = environ[variable] if resolve else EnvVar(variable)
        else:
            urls[name] = f"sqlite:///{folder / filename}"
    return urls


def build_resources(environ: Mapping[str, str] | None = None, resolve: bool = False) -> dict:
    """The resources of the code location (``resolve=True`` gives plain values, for the CLI)."""
    environ = os.environ if environ is None else environ
    urls = resource_urls(environ, resolve)
    return {
        "catalog": CatalogResource(url=urls["catalog"]),
        "shards": ShardsResource(
            url_template=urls["shards"],
            busy_retries=int(environ.get("METRICS_BUSY_RETRIES", 2)),
            busy_retry_delay_s=float(environ.get("METRICS_BUSY_RETRY_DELAY_S", 20)),
            max_parallel_shards=int(environ.get("METRICS_MAX_PARALLEL_SHARDS", 4)),
        ),
        "warehouse": WarehouseResource(url=urls["warehouse"]),
    }
