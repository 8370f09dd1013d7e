"""benchmarks/profile.py sorts py-spy's samples by the part of the work their stack names."""

from benchmarks.profile import classify, parse

MAIN = "thread (1): MainThread"
SHARD = "thread (7): shard_0"
RUN = "execute_in_process (dagster/_core/definitions/job_definition.py:700)"
STEP = "hourly_aggregates (metrics_pipeline/datapump/assets/hourly.py:120)"
READ = "read_shard (metrics_pipeline/datapump/pipeline.py:223);read_hourly (metrics_pipeline/datapump/shards.py:234)"
FOLD = "fold_hourly_rows (metrics_pipeline/datapump/sql.py:371)"
FETCH = (
    "__iter__ (sqlalchemy/engine/result.py:200);_fetchiter_impl (sqlalchemy/engine/cursor.py:1300)"
)
WRITE = "write (metrics_pipeline/datapump/pipeline.py:209);write_partials (metrics_pipeline/resources/warehouse.py:300);do_execute (sqlalchemy/engine/default.py:900)"
EVENTS = "handle_new_event (dagster/_core/instance/__init__.py:2400);store_event (dagster/_core/storage/event_log/sqlite/sqlite_event_log.py:200)"


def test_each_part_of_the_work_has_its_category():
    assert classify([RUN, STEP, *READ.split(";"), FOLD, *FETCH.split(";")]) == (
        "in the shard's database"
    )
    assert classify([RUN, STEP, *READ.split(";"), FOLD]) == "folding"
    # A warehouse write runs SQLAlchemy's execute too: it is a write, not time in the shard.
    assert classify([RUN, STEP, *WRITE.split(";")]) == "warehouse reads and writes"
    assert classify([RUN, STEP, "write (metrics_pipeline/datapump/pipeline.py:208)"]) == (
        "waiting for the write lock"
    )
    assert classify([RUN, *EVENTS.split(";")]) == "Dagster events"
    wait = "aggregate_hourly (metrics_pipeline/datapump/pipeline.py:273)"
    assert classify([RUN, STEP, wait, "as_completed (concurrent/futures/_base.py:243)"]) == (
        "waiting for the shard threads"
    )
    round_wait = "read_round (metrics_pipeline/datapump/pipeline.py:290)"
    assert classify([RUN, STEP, round_wait, "wait (concurrent/futures/_base.py:305)"]) == (
        "waiting for the shard threads"
    )
    assert classify(["<module> (metrics_pipeline/cli.py:1)", "_find_and_load (<frozen>:1)"]) == (
        "start-up"
    )
    assert classify([RUN]) == "Dagster (other)"
    assert classify(["main (something.py:1)"]) == "other"


def test_samples_become_seconds_per_thread_kind():
    raw = "\n".join(
        [
            f"{MAIN};{RUN};{EVENTS} 150",
            f"{MAIN};{RUN};{STEP};as_completed (concurrent/futures/_base.py:243) 100",
            f"{SHARD};{READ};{FOLD};{FETCH} 400",
            f"thread (8): shard_1;{READ};{FOLD};{FETCH} 100",
            f"{SHARD};{READ};{FOLD} 50",
            "py-spy> a line that is not a sample",
        ]
    )
    result = parse(raw, rate=50)
    assert result["main_thread_s"] == {"Dagster events": 3.0, "waiting for the shard threads": 2.0}
    assert result["shard_threads_s"] == {"in the shard's database": 10.0, "folding": 1.0}
