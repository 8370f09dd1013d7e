"""The fast path for SQLite shards whose CreatedDate text is plain: the same figures as an
independent parse, and the general statements wherever one row of the window is not plain.

The fast statements take the hour as the text's first 13 characters and the window as a text
range; a row with a zone, another separator or an impossible time would land in the wrong hour
there, so such a window must be read again by the general statements. Each shard below is
written the way another program writes it (Python's sqlite3, text timestamps).
"""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, event

from metrics_pipeline.datapump.shards import ShardsResource
from metrics_pipeline.sql.dialect import PlainForm
from tests.datapump.test_timestamps import BILLER, MS, H, expected_hours, parse_utc, write_shard

START, END = H, H + timedelta(hours=4)


def plain(ts: datetime, separator: str = " ", digits: int = 3) -> str:
    text = ts.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    return text + (f".{ts.microsecond:06d}"[: digits + 1] if digits else "")


def edges() -> list[datetime]:
    """Every hour boundary of the window and one millisecond either side, and ordinary calls."""
    out = []
    for h in range(0, 5):
        edge = H + timedelta(hours=h)
        out += [edge - MS, edge, edge + MS]
    return out + [H + timedelta(minutes=7 * k, seconds=k, milliseconds=k) for k in range(35)]


def write_plain_shard(path, created: list[str]) -> list[tuple]:
    statuses = ["200", "500", " 204 ", "Timeout", "404", "504"]
    rows = [
        (c, float(10 + 7 * i % 900), statuses[i % len(statuses)]) for i, c in enumerate(created)
    ]
    # An index on CreatedDate only, as on shards another program created.
    write_shard(path, rows, "IX_DataPumpDetail_Created", "CreatedDate")
    return rows


def read(tmp_path, start: datetime = START, end: datetime = END) -> tuple[dict, list[str]]:
    """The partials of the window as the pipeline reads them, and the statements it sent."""
    shards = ShardsResource(url_template=f"sqlite:///{tmp_path}/{{shard}}.db")
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        partials = {}
        for _, _, chunk, _ in shards.read_hourly("s", [BILLER], start, end):
            partials.update(chunk)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        shards.teardown_after_execution(None)
    return partials, sent


def assert_as_parsed(partials: dict, rows: list[tuple]) -> None:
    expected = {k: v for k, v in expected_hours(rows).items() if START <= k[1] < END}
    assert set(partials) == set(expected)
    for key, want in expected.items():
        got = partials[key]
        assert got.request_count == want["RequestCount"], key
        assert got.failed_count == want["FailedRequests"], key
        assert got.timeout_count == want["TimeOutCount"], key
        assert got.response_time_count == want["ResponseTimeCount"], key
        assert got.total_response_time == want["TotalResponseTime"], key
        assert got.exact_percentiles[50] == want["P50ResponseTime"], key
        assert got.exact_percentiles[99] == want["P99ResponseTime"], key


def fast(sent: list[str]) -> bool:
    return any("substr(" in s and ", 1, 13)" in s for s in sent)


def general(sent: list[str]) -> bool:
    return any("datetime(unixepoch(" in s for s in sent)


@pytest.mark.parametrize(
    "separator, digits", [(" ", 0), (" ", 3), (" ", 6), ("T", 0), ("T", 3)], ids=repr
)
def test_a_plain_shard_is_read_by_the_fast_statements_alone(tmp_path, separator, digits):
    rows = write_plain_shard(tmp_path / "s.db", [plain(t, separator, digits) for t in edges()])
    partials, sent = read(tmp_path)
    assert_as_parsed(partials, rows)
    assert fast(sent) and not general(sent), sent


def test_an_hour_the_text_can_hold_but_a_clock_cannot_is_read_as_sqlite_reads_it(tmp_path):
    # SQLite reads '24:00:00' as the next day's midnight, outside the window 20:00-24:00 whose
    # text range holds it; the fast hour ('... 24') is no hour, so the general statements read
    # the window and the row is in no hour of it.
    evening = H.replace(hour=20)
    created = [plain(evening + timedelta(hours=1)), H.strftime("%Y-%m-%d") + " 24:00:00"]
    write_plain_shard(tmp_path / "s.db", created)
    partials, sent = read(tmp_path, evening, evening + timedelta(hours=4))
    assert {k: p.request_count for k, p in partials.items()} == {
        (BILLER, evening + timedelta(hours=1)): 1
    }
    assert fast(sent) and general(sent), sent


@pytest.mark.parametrize(
    "odd",
    [
        # A local time whose text sorts inside the window but whose UTC hour is two hours later.
        (H + timedelta(minutes=30) + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S") + "+02:00",
        # Zulu, the other separator, a fraction followed by a zone.
        (H + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S") + "Z",
        (H + timedelta(hours=2, minutes=5)).strftime("%Y-%m-%dT%H:%M:%S"),
        (H + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S") + ".250-01:00",
        # Another program's fraction beside the shard's three digits (plain, but not its form).
        (H + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S.%f"),
        # Text that only looks like a time.
        H.strftime("%Y-%m-%d") + " 10:61:00.000",
    ],
    ids=["offset", "zulu", "other-separator", "fraction-and-zone", "six-digits", "minute-61"],
)
def test_one_row_that_is_not_plain_sends_the_window_to_the_general_statements(tmp_path, odd):
    created = [plain(t) for t in edges()]
    created.insert(len(created) // 2, odd)
    rows = write_plain_shard(tmp_path / "s.db", created)
    partials, sent = read(tmp_path)
    # Without the check the odd row would be counted in the hour its text starts with.
    assert fast(sent) and general(sent), sent
    dated = [r for r in rows if parse_utc(r[0]) is not None]
    assert_as_parsed(partials, dated)


def test_the_plain_form_is_read_off_one_value():
    assert PlainForm.of("2025-03-05 10:00:00") == PlainForm(" ", 0)
    assert PlainForm.of("2025-03-05T10:00:00.123") == PlainForm("T", 3)
    assert PlainForm.of("2025-03-05 10:00:00.123456") == PlainForm(" ", 6)
    for odd in ("2025-03-05 10:00:00Z", "2025-03-05 10:00:00+02:00", "junk", "", None, 7):
        assert PlainForm.of(odd) is None, odd
    assert PlainForm(" ", 3).bound(H) == "2025-03-05 10:00:00"


def test_rows_in_no_hour_are_counted_alike_after_a_fast_read(tmp_path):
    """After a fast read of the window only its margins are looked at again for rows in no
    hour: the count is the full statement's, a plain-looking impossible time included."""
    day = H.strftime("%Y-%m-%d")
    margin = [f"{day} 27:00:00.000", f"{day} 05:30:00.000", None, "not a date"]
    write_plain_shard(tmp_path / "s.db", [plain(t) for t in edges()] + margin)
    shards = ShardsResource(url_template=f"sqlite:///{tmp_path}/{{shard}}.db")
    try:
        chunks = list(shards.read_hourly("s", [BILLER], START, END))
        assert {c.plain for c in chunks} == {PlainForm(" ", 3)}
        full = shards.undated_rows("s", [BILLER], START, END)
        narrowed = shards.undated_rows("s", [BILLER], START, END, verified=PlainForm(" ", 3))
    finally:
        shards.teardown_after_execution(None)
    assert full == narrowed == {BILLER: 3}  # 27:00, NULL and text; 05:30 is a real time


def test_only_whole_fast_reads_of_every_biller_narrow_the_count():
    from metrics_pipeline.datapump.pipeline import _ShardProgress
    from metrics_pipeline.datapump.shards import ShardChunk

    form, hour = PlainForm(" ", 3), timedelta(hours=1)

    def progress(*chunks):
        p = _ShardProgress([1, 2], free=[1, 2])
        for start, end, plain_form, billers in chunks:
            p.read(ShardChunk(H + start * hour, H + end * hour, {}, plain_form), billers)
        return p.verified(H, H + 4 * hour)

    assert progress((2, 4, form, [1, 2]), (0, 2, form, [2, 1])) == form
    assert progress((0, 2, form, [1, 2]), (3, 4, form, [1, 2])) is None  # a gap
    assert progress((0, 2, form, [1, 2]), (2, 4, None, [1, 2])) is None  # a general read
    assert progress((0, 4, form, [1])) is None  # not every biller
    assert progress((0, 2, form, [1, 2]), (2, 4, PlainForm("T", 3), [1, 2])) is None
