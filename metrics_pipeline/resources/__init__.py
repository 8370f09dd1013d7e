"""Resources, built from the environment: EnvVar where a variable is set, the embedded default
(SQLite files in METRICS_DATA_DIR, default ./data) where it is not."""

import os
from collections.abc import Mapping
from pathlib import Path

from dagster import EnvVar

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


def warehouse_resource(environ: Mapping[str, str] | None = None, resolve: bool = False):
    """The platform's warehouse, shared by every family (``resolve=True`` gives a plain URL
    instead of EnvVar, for the command line)."""
    return WarehouseResource(url=resource_urls(environ, resolve)["warehouse"])
