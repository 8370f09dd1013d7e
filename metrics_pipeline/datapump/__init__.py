"""The DataPump family (seed 000): biller shards' call rows to hourly, daily and weekly aggregates.

Rules and shard SQL (``sql``), the shards and catalog resources (``shards``), the pipeline that
reads and folds (``pipeline``), the assets and checks (``assets/``), jobs, schedules and sensors,
the refresh planning (``refresh``), objectives, and the command line's plan → run → report
(``runs``). ``definitions(environ)`` gives the family's Dagster definitions.
"""
