"""The pure rules: validation of a data point, and the exact statistics."""

from datetime import datetime, timedelta

import pytest

from metrics_pipeline.collected.rules import (
    MAX_MAGNITUDE,
    BadPoint,
    hour_stats,
    median,
    message_id,
    validate_item,
)

NOW = datetime(2025, 3, 1, 12, 30)
DAY, FIVE_MIN = timedelta(days=1), timedelta(minutes=5)


def check(raw, **kw):
    return validate_item(raw, "", NOW, DAY, FIVE_MIN, **kw)


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], None),
        ([5], 5),
        ([3, 1], 2),
        ([4, 1, 3, 2], 2.5),
        ([1, 2, 3], 2),
        ([10, -1, 7, 7, 7], 7),
        ([0.1, 0.2], 0.15000000000000002),
    ],
)
def test_median_is_the_middle_or_the_mean_of_the_two_middles(values, expected):
    assert median(values) == expected


def test_hour_stats():
    s = hour_stats([4, 1, 3, 2])
    assert (s.count, s.average, s.minimum, s.maximum, s.median) == (4, 2.5, 1, 4, 2.5)
    assert hour_stats([]).stat("count") == 0 and hour_stats([]).stat("average") is None


def test_a_valid_item():
    item = check({"app": "web", "time": "2025-03-01T12:00:00Z", "id": "r-1", "metrics": {"a": 1}})
    assert item.time == datetime(2025, 3, 1, 12) and item.metrics == {"a": 1.0}
    assert message_id(item) == "web/r-1"
    assert check({"app": "web", "metrics": {"b.c-d_1": 2.5}}).time == NOW  # no time: now


def test_offsets_become_utc():
    item = check({"app": "a", "time": "2025-03-01T14:00:00+02:00", "metrics": {"k": 0}})
    assert item.time == datetime(2025, 3, 1, 12)


@pytest.mark.parametrize(
    "raw, field",
    [
        ([], "body"),
        ({"metrics": {"a": 1}}, "app"),
        ({"app": "bad app", "metrics": {"a": 1}}, "app"),
        ({"app": "a"}, "metrics"),
        ({"app": "a", "metrics": {}}, "metrics"),
        ({"app": "a", "metrics": {"bad key": 1}}, "metrics"),
        ({"app": "a", "metrics": {"k" * 101: 1}}, "metrics"),
        ({"app": "a", "metrics": {"k": "1"}}, "metrics.k"),
        ({"app": "a", "metrics": {"k": True}}, "metrics.k"),
        ({"app": "a", "metrics": {"k": None}}, "metrics.k"),
        ({"app": "a", "metrics": {"k": 1e309}}, "metrics.k"),
        # Finite, but their hourly sum, average or median would overflow a double.
        ({"app": "a", "metrics": {"k": 1e308}}, "metrics.k"),
        ({"app": "a", "metrics": {"k": -1e308}}, "metrics.k"),
        ({"app": "a", "metrics": {"k": 10**400}}, "metrics.k"),
        ({"app": "a", "metrics": {"k": 1}, "time": "yesterday"}, "time"),
        ({"app": "a", "metrics": {"k": 1}, "time": "2025-02-20T00:00:00Z"}, "time"),
        ({"app": "a", "metrics": {"k": 1}, "time": "2025-03-01T13:00:00Z"}, "time"),
        ({"app": "a", "metrics": {"k": 1}, "id": "no spaces"}, "id"),
        ({"app": "a", "metrics": {"k": 1}, "id": 7}, "id"),
    ],
)
def test_a_bad_field_is_named(raw, field):
    with pytest.raises(BadPoint) as err:
        check(raw)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_nan_is_not_a_number():
    with pytest.raises(BadPoint, match="metrics.k: not a number from -1e\\+250 to 1e\\+250"):
        check({"app": "a", "metrics": {"k": float("nan")}})


def test_the_largest_values_keep_every_statistic_finite():
    item = check({"app": "a", "metrics": {"lo": -MAX_MAGNITUDE, "hi": MAX_MAGNITUDE, "t": 5e-324}})
    assert item.metrics == {"lo": -1e250, "hi": 1e250, "t": 5e-324}
    stats = hour_stats([-MAX_MAGNITUDE, -MAX_MAGNITUDE])
    assert (stats.average, stats.median) == (-1e250, -1e250)


def test_the_get_form_names_data():
    with pytest.raises(BadPoint) as err:
        check({"metrics": {"k": "x"}}, default_app="a", metrics_field="data")
    assert err.value.field == "data.k"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[", "not JSON"),
        ('[{"sha256": "' + "a" * 64 + '", "apps": "*"}]', "'name'"),
        ('[{"name": "k", "sha256": "short", "apps": "*"}]', "64 hex digits"),
        ('[{"name": "k", "sha256": "' + "a" * 64 + '", "apps": [1]}]', "'apps'"),
        (
            '[{"name": "k", "sha256": "' + "a" * 64 + '", "apps": ["x"]},'
            ' {"name": "l", "sha256": "' + "a" * 64 + '", "apps": "*"}]',
            "twice",
        ),
    ],
)
def test_a_malformed_app_keys_file_is_a_configuration_error(tmp_path, content, message):
    from metrics_pipeline.collected.auth import load_app_keys
    from metrics_pipeline.resources.engines import ConfigurationError

    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=f"METRICS_COLLECTOR_TOKENS_FILE.*{message}"):
        load_app_keys(path)


def test_app_keys_name_the_apps_a_key_may_send_for(tmp_path):
    from metrics_pipeline.collected.auth import find_key, load_app_keys
    from metrics_pipeline.web.auth import token_digest

    path = tmp_path / "keys.json"
    path.write_text(
        f'[{{"name": "web", "sha256": "{token_digest("s1")}", "apps": ["web"]}},'
        f' {{"name": "ops", "sha256": "{token_digest("s2").upper()}", "apps": "*"}}]'
    )
    keys = load_app_keys(path)
    web, ops = find_key(keys, "s1"), find_key(keys, "s2")
    assert web.may_send("web") and not web.may_send("batch")
    assert ops.may_send("anything") and find_key(keys, "s3") is None


@pytest.mark.parametrize(
    "values, p95, p99",
    [
        ([7.0], 7.0, 7.0),
        ([1.0, 2.0], 2.0, 2.0),
        (list(map(float, range(1, 101))), 95.0, 99.0),
        (list(map(float, range(1, 21))), 19.0, 20.0),
        (list(map(float, range(1, 201))), 190.0, 198.0),
    ],
)
def test_percentiles_are_nearest_rank(values, p95, p99):
    stats = hour_stats(reversed(values))
    assert (stats.p95, stats.p99) == (p95, p99)
    assert (stats.stat("p95"), stats.stat("p99")) == (p95, p99)
