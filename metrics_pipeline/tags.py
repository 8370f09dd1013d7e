"""Run tags, once: what the code location writes on its runs and matches on them (Dagster's own
partition-range tags included), for every family and the CLI."""

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
REFRESH_TAG = "metrics/refresh"
LEVEL_TAG = "metrics/level"
#: On a refresh's hourly run: detect changes beyond each shard's cursor and recompute them too.
CHANGES_TAG = "metrics/changes"
#: Set by that run: the hours outside its partition range it recomputed (late rows), which the
#: daily and weekly runs of the refresh roll up as well.
TOUCHED_TAG = "metrics/touched_hours"
#: Run tags that narrow a run to some billers (an operator's rebuild, a retry) or to the billers
#: whose ledger rows of each window are not "written" (the backlog's backfills).
BILLERS_TAG = "metrics/billers"
SCOPE_TAG = "metrics/scope"
SCOPE_INCOMPLETE = "incomplete"
RETRY_FLAG = "metrics/retry"
ATTEMPT_TAG = "metrics/attempt"
HOST_TAG = "metrics/host"
PID_TAG = "metrics/pid"
UNDATED_TAG = "metrics/undated_rows"
EMPTY_SHARDS_TAG = "metrics/empty_shards"
