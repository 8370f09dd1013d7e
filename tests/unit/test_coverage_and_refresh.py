"""Pure rules of the coverage verdict and the refresh planning."""

from datetime import datetime, timedelta

from metrics_pipeline.coverage import WRITTEN, LedgerEntry, judge
from metrics_pipeline.datapump.pipeline import hour_segments, split_span
from metrics_pipeline.datapump.refresh import decode_hours, encode_hours, refresh_hours

H = datetime(2025, 3, 1, 10)


def test_coverage_needs_a_written_row_for_every_expected_biller():
    ledger = {
        "7": LedgerEntry("7", H, WRITTEN),
        "8": LedgerEntry("8", H, "busy", "shard busy: Processing flag still set in shard alpha"),
    }
    verdict = judge(H, ["7", "8", "9"], ledger)
    assert not verdict.complete and verdict.written == 1 and verdict.expected == 3
    assert verdict.by_state() == {"busy": ["8"], "missing": ["9"]}
    assert "2 of 3 billers not written" in verdict.describe()
    assert judge(H, ["7"], ledger).complete


def test_touched_hours_round_trip_as_compact_ranges():
    hours = [H, H + timedelta(hours=1), H + timedelta(hours=2), H + timedelta(days=9)]
    text = encode_hours(reversed(hours))
    assert text == "2025-03-01T10/2025-03-01T12,2025-03-10T10"
    assert decode_hours(text) == hours
    assert decode_hours("") == [] and encode_hours([]) == ""


def test_a_shard_is_read_in_spans_of_requested_hours_only():
    old = H - timedelta(days=21)
    wanted = {7: {old, H}, 8: {H, H + timedelta(hours=3)}}
    spans = hour_segments(wanted)
    # Three weeks apart: two reads; hours a few apart are one read.
    assert spans == [
        (old, old + timedelta(hours=1), [7]),
        (H, H + timedelta(hours=4), [7, 8]),
    ]
    assert hour_segments({7: {H, H + timedelta(hours=10)}}, gap=6)[1][0] == H + timedelta(hours=10)


def test_a_span_is_cut_at_whole_hours_into_nearly_equal_parts():
    week = split_span(H, H + timedelta(days=7), 2)
    assert week == [(H, H + timedelta(hours=84)), (H + timedelta(hours=84), H + timedelta(days=7))]
    five = split_span(H, H + timedelta(hours=11), 5)
    assert [b - a for a, b in five] == [timedelta(hours=n) for n in (2, 2, 2, 2, 3)]
    assert (
        all(a < b for a, b in five) and five[0][0] == H and five[-1][1] == H + timedelta(hours=11)
    )
    # Never a part shorter than an hour, never more parts than asked.
    assert split_span(H, H + timedelta(hours=2), 4) == [
        (H, H + timedelta(hours=1)),
        (H + timedelta(hours=1), H + timedelta(hours=2)),
    ]
    assert split_span(H, H + timedelta(hours=9), 1) == [(H, H + timedelta(hours=9))]


def test_refresh_hours_keep_the_closed_hour_for_one_interval():
    assert refresh_hours(H + timedelta(minutes=10), 30) == [H - timedelta(hours=1), H]
    assert refresh_hours(H + timedelta(minutes=45), 30) == [H]


def test_contiguous_runs_cut_windows_where_one_is_missing():
    from metrics_pipeline.partitions import contiguous_runs
    from metrics_pipeline.semantics import DAILY, HOURLY

    h = datetime(2025, 3, 1, 22)
    hours = [h + timedelta(hours=i) for i in (3, 0, 1, 1, 5)]
    assert contiguous_runs(HOURLY, hours) == [
        (h, h + timedelta(hours=1)),
        (h + timedelta(hours=3), h + timedelta(hours=3)),
        (h + timedelta(hours=5), h + timedelta(hours=5)),
    ]
    days = [datetime(2025, 3, d) for d in (2, 1, 4)]
    assert contiguous_runs(DAILY, days) == [
        (datetime(2025, 3, 1), datetime(2025, 3, 2)),
        (datetime(2025, 3, 4), datetime(2025, 3, 4)),
    ]
    assert contiguous_runs(HOURLY, []) == []
    # Gaps narrower than join_within are merged (one read over them).
    assert contiguous_runs(HOURLY, hours, join_within=timedelta(hours=3)) == [
        (h, h + timedelta(hours=5))
    ]
    assert contiguous_runs(HOURLY, hours, join_within=timedelta(hours=2)) == [
        (h, h + timedelta(hours=1)),
        (h + timedelta(hours=3), h + timedelta(hours=3)),
        (h + timedelta(hours=5), h + timedelta(hours=5)),
    ]
