from datetime import datetime
from decimal import Decimal

import numpy as np
import pytest

from metrics_pipeline.semantics import (
    DAILY,
    HOURLY,
    PERCENTILES,
    WEEKLY,
    Partial,
    Rules,
    Sketch,
    average,
    calls_summary,
    is_failed,
    is_timeout,
    nearest_rank,
    partial_from_rows,
    percentage,
    rollup,
    round2,
    sketch_bucket,
    status_as_int,
    week_start,
)


@pytest.mark.parametrize(
    "status, rt, timeout, failed",
    [
        ("200", 120.5, False, False),
        ("399", 10, False, False),
        ("302", None, False, False),
        ("400", 10, False, True),
        ("199", 10, False, True),
        ("500", 10, False, True),
        ("408", 10, True, True),
        ("504", 10, True, True),
        (" 504 ", 10, True, True),
        ("0408", 10, True, True),
        ("timeout", 10, True, True),
        ("TimeOut ", 10, True, True),
        ("time out", 10, False, True),
        ("200", 30000, True, True),
        ("200", 29999.99, False, False),
        (None, 10, False, True),
        ("", 10, False, True),
        ("   ", 10, False, True),
        ("abc", 10, False, True),
        ("2OO", 10, False, True),
        ("-1", 10, False, True),
        ("+200", 10, False, True),
        (" 200 ", 10, False, False),
        ("0200", 10, False, False),
        ("200", -5, False, False),
        ("200", None, False, False),
    ],
)
def test_timeout_and_failure_rules(status, rt, timeout, failed):
    assert is_timeout(status, rt) is timeout
    assert is_failed(status, rt) is failed


def test_rules_are_configurable():
    rules = Rules(timeout_status_codes=(599,), timeout_threshold_ms=1000, success_max=299)
    assert is_timeout("599", 1, rules) and not is_timeout("504", 1, rules)
    assert is_timeout("200", 1000, rules)
    assert is_failed("302", 1, rules) and not is_failed("299", 1, rules)


def test_status_as_int():
    assert status_as_int(" 42 ") == 42
    assert status_as_int("4 2") is None
    assert status_as_int("٣") is None  # non-ASCII digit


@pytest.mark.parametrize(
    "requests, failed, timeouts, error_rate, timeout_rate",
    [
        (1800, 36, 15, "2.00", "0.83"),
        (1750, 25, 10, "1.43", "0.57"),
        (42000, 820, 70, "1.95", "0.17"),
        (294000, 5600, 540, "1.90", "0.18"),
    ],
)
def test_seed_golden_figures(requests, failed, timeouts, error_rate, timeout_rate):
    p = Partial(request_count=requests, failed_count=failed, timeout_count=timeouts)
    assert p.error_rate == Decimal(error_rate)
    assert p.timeout_rate == Decimal(timeout_rate)


def test_rounding_is_half_away_from_zero():
    assert round2(Decimal("2.345")) == Decimal("2.35")
    assert round2(Decimal("-2.345")) == Decimal("-2.35")
    assert round2(2.675) == Decimal("2.68")  # float 2.675 is 2.67499999...; repr keeps 2.675
    assert percentage(1, 8) == Decimal("12.50")
    assert percentage(1, 800) == Decimal("0.13")  # 0.125 -> 0.13
    assert average(Decimal("0.125"), 1) == Decimal("0.13")


def test_zero_denominators_are_null():
    assert percentage(0, 0) is None
    assert average(Decimal(0), 0) is None
    empty = Partial()
    assert empty.error_rate is None and empty.avg_response_time is None
    assert empty.percentile(95) is None


def test_nearest_rank():
    assert [nearest_rank(100, p) for p in PERCENTILES] == [50, 95, 99]
    assert nearest_rank(1, 99) == 1
    assert nearest_rank(3, 50) == 2
    assert nearest_rank(101, 50) == 51


def test_rollup_is_exact_not_an_average_of_averages():
    a = partial_from_rows([("200", 100)] * 9 + [("500", 100)])  # 10 calls, avg 100, 10% errors
    b = partial_from_rows([("200", 1000)] * 90)  # 90 calls, avg 1000, 0% errors
    total = rollup([a, b])
    assert total.request_count == 100
    assert total.avg_response_time == Decimal("910.00")  # (1000 + 90000) / 100, not 550
    assert total.error_rate == Decimal("1.00")  # 1 / 100, not 5
    direct = partial_from_rows([("200", 100)] * 9 + [("500", 100)] + [("200", 1000)] * 90)
    assert total.total_response_time == direct.total_response_time
    assert total.sketch.counts == direct.sketch.counts


def test_only_valid_response_times_enter_averages():
    p = partial_from_rows([("200", 100), ("200", None), ("200", -1), ("500", 300)])
    assert p.request_count == 4
    assert p.response_time_count == 2
    assert p.avg_response_time == Decimal("200.00")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sketch_percentiles_within_one_percent(seed):
    rng = np.random.default_rng(seed)
    values = np.round(rng.lognormal(np.log(120), 0.8, 20000), 2)
    values[:50] = 0  # zeros are valid response times
    hours = [partial_from_rows(("200", float(v)) for v in chunk) for chunk in np.split(values, 20)]
    day = rollup(hours)
    ordered = np.sort(values)
    for p in PERCENTILES:
        exact = ordered[nearest_rank(len(ordered), p) - 1]
        got = float(day.percentile(p))
        assert abs(got - exact) <= 0.01 * exact + 0.005, (p, got, exact)


def test_hourly_percentiles_are_exact():
    values = [float(v) for v in range(1, 201)]
    p = partial_from_rows(("200", v) for v in values)
    assert p.percentile(50) == Decimal("100.00")
    assert p.percentile(95) == Decimal("190.00")
    assert p.percentile(99) == Decimal("198.00")


def test_sketch_encoding_round_trips():
    s = Sketch()
    for v in (0, 0.01, 5, 5, 120.5, 30000):
        s.add(sketch_bucket(v))
    assert Sketch.decode(s.encode()).counts == s.counts
    assert Sketch.decode("").total == 0 and Sketch.decode(None).total == 0


def test_merging_sketches_read_from_text_adds_the_same_counts_as_merging_counts():
    rng = np.random.default_rng(7)
    parts = [
        {
            int(b): int(n)
            for b, n in zip(rng.integers(-5, 40, 30), rng.integers(0, 9, 30), strict=True)
        }
        for _ in range(12)
    ]
    want: dict[int, int] = {}
    for part in parts:
        for b, n in part.items():
            if n:
                want[b] = want.get(b, 0) + n
    lazy = Sketch()
    for i, part in enumerate(parts):
        # Text with a bucket repeated and out of order (a shard's form), or counts, alternately.
        pairs = [f"{b}:{n}" for b, n in part.items()]
        text = ",".join(reversed(pairs)) + (",3:0" if pairs else "")
        lazy.merge(Sketch.decode(text) if i % 2 else Sketch(part))
    assert lazy.counts == want
    assert lazy.encode() == ",".join(f"{b}:{n}" for b, n in sorted(want.items()))
    assert lazy == Sketch(want) and lazy.total == sum(want.values())


@pytest.mark.parametrize("seed", [1, 2])
def test_listed_calls_give_the_sketch_and_exact_percentiles_of_their_values(seed):
    rng = np.random.default_rng(seed)
    groups = []
    for size in (0, 1, 2, 3, 40, 900, 5):
        values = np.round(rng.lognormal(5, 1.3, size), int(rng.integers(0, 4))).tolist()
        values[: size // 10] = [0.0] * (size // 10)  # zeros: the zero bucket
        groups.append(values)
    # Values that need all their digits (SQLite's quote writes them with 20), ties, a huge one.
    groups.append([0.12499999999999999, 0.125, 3.6e9, 0.125, 2.675])
    groups.append([0.12499999999999999])
    texts = [",".join(map(repr, rng.permutation(g).tolist())) if g else None for g in groups]
    got = calls_summary(texts, [len(g) for g in groups])
    assert len(got) == len(groups)
    for values, (sketch, exact) in zip(groups, got, strict=True):
        want = Sketch()
        for v in values:
            want.add(sketch_bucket(v))
        assert sketch.counts == want.counts
        ranked = sorted(values)
        assert exact == {
            q: round2(ranked[nearest_rank(len(ranked), q) - 1]) if ranked else None
            for q in PERCENTILES
        }
    # 0.12499999999999999 is not 0.125: its own (lower) cent.
    assert got[-2][1][50] == Decimal("0.13") and got[-1][1][50] == Decimal("0.12")


def test_listed_calls_that_are_not_their_count_of_numbers_are_refused():
    with pytest.raises(ValueError, match="not 3 numbers"):
        calls_summary(["1.5,2"], [3])
    with pytest.raises(ValueError, match="not 2 numbers"):
        calls_summary(["1.5,abc"], [2])
    assert calls_summary([None, None], [0, 0])[1][1] == dict.fromkeys(PERCENTILES)


def test_windows_are_utc_start_inclusive_weeks_start_sunday():
    ts = datetime(2025, 4, 10, 13, 45)  # a Thursday
    assert HOURLY.window(ts) == (datetime(2025, 4, 10, 13), datetime(2025, 4, 10, 14))
    assert DAILY.window(ts) == (datetime(2025, 4, 10), datetime(2025, 4, 11))
    assert WEEKLY.window(ts) == (datetime(2025, 4, 6), datetime(2025, 4, 13))
    sunday = datetime(2025, 4, 13)
    assert week_start(sunday) == sunday
    assert week_start(datetime(2025, 4, 12, 23, 59)) == datetime(2025, 4, 6)


def test_levels_are_one_object_each_with_their_next_and_previous():
    from metrics_pipeline.semantics import LEVELS, LEVELS_BY_ID, TIMESTAMP_TYPES

    assert [lv.id for lv in LEVELS] == [1, 2, 3]
    assert HOURLY.next == DAILY and DAILY.next == WEEKLY and WEEKLY.next is None
    assert DAILY.previous == HOURLY and HOURLY.previous is None
    assert LEVELS_BY_ID[2] is DAILY and HOURLY.job_name == "hourly_job"
    assert [t.name for t in TIMESTAMP_TYPES] == ["Hourly", "Daily", "Weekly"]
    # Windows overlapping a range, whole windows, weeks from Sunday.
    assert WEEKLY.starts(datetime(2025, 4, 10), datetime(2025, 4, 14)) == [
        datetime(2025, 4, 6),
        datetime(2025, 4, 13),
    ]
    assert len(HOURLY.starts(datetime(2025, 4, 10, 0, 30), datetime(2025, 4, 10, 3))) == 3


@pytest.mark.parametrize(
    "level, start, now, first, hours",
    [
        # Closed windows: the whole day or week.
        (DAILY, datetime(2025, 3, 2), datetime(2025, 3, 9, 12), datetime(2025, 1, 5), 24),
        (WEEKLY, datetime(2025, 3, 2), datetime(2025, 3, 9, 12), datetime(2025, 1, 5), 168),
        (HOURLY, datetime(2025, 3, 2, 5), datetime(2025, 3, 9), datetime(2025, 1, 5), 1),
        # The running day: up to and including the running hour (10:15 -> 00..10 = 11 hours).
        (DAILY, datetime(2025, 3, 9), datetime(2025, 3, 9, 10, 15), datetime(2025, 1, 5), 11),
        (DAILY, datetime(2025, 3, 9), datetime(2025, 3, 9, 0, 0), datetime(2025, 1, 5), 1),
        (WEEKLY, datetime(2025, 3, 9), datetime(2025, 3, 10, 1, 59), datetime(2025, 1, 5), 26),
        # A week that begins before the partitions do (first partition on a Wednesday).
        (WEEKLY, datetime(2025, 3, 2), datetime(2025, 4, 1), datetime(2025, 3, 5), 96),
        # A window entirely in the future or before the partitions: nothing expected.
        (DAILY, datetime(2025, 3, 10), datetime(2025, 3, 9, 10), datetime(2025, 1, 5), 0),
        (DAILY, datetime(2025, 1, 1), datetime(2025, 3, 9), datetime(2025, 1, 5), 0),
    ],
)
def test_expected_hours(level, start, now, first, hours):
    assert level.expected_hours(start, now, first) == hours


def test_rollup_sums_covered_hours():
    parts = [Partial(request_count=3, covered_hours=1), Partial(request_count=0, covered_hours=1)]
    total = rollup(parts)
    assert (total.request_count, total.covered_hours) == (3, 2)
