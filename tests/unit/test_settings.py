"""Settings: one typed reader, and each variable read in one module."""

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from metrics_pipeline.resources.engines import ConfigurationError
from metrics_pipeline.settings import from_env, sensor_interval

PACKAGE = Path(__file__).resolve().parents[2] / "metrics_pipeline"
#: A variable's value read from a mapping: env.get("X"), environ["X"], os.environ.get("X"), or
#: the variable named in a settings table ("field": "X") or an EnvVar("X").
READ = re.compile(
    r"""(?:(?:environ|env)(?:\.get\(|\[)|EnvVar\(|^\s*"\w+":\s*)"(METRICS_[A-Z0-9_]+)\"""",
    re.MULTILINE,
)


@dataclass(frozen=True)
class _Example:
    count: int = 3
    ratio: float = 0.5
    name: str = "x"


def test_from_env_converts_by_the_default_type_and_names_a_bad_variable():
    env = {"A_COUNT": "7", "A_RATIO": "0.25", "A_NAME": "y"}
    names = {"count": "A_COUNT", "ratio": "A_RATIO", "name": "A_NAME"}
    assert from_env(_Example, names, env) == _Example(7, 0.25, "y")
    assert from_env(_Example, names, {}) == _Example()
    assert from_env(_Example, names, {"A_COUNT": ""}, name="given") == _Example(name="given")
    with pytest.raises(ConfigurationError, match=r"^A_COUNT: expected int, got 'seven'$"):
        from_env(_Example, names, {"A_COUNT": "seven"})


def test_the_sensor_interval_override():
    assert sensor_interval({}) == {}
    assert sensor_interval({"METRICS_SENSOR_INTERVAL_S": "5"}) == {"minimum_interval_seconds": 5}
    with pytest.raises(ConfigurationError, match="METRICS_SENSOR_INTERVAL_S"):
        sensor_interval({"METRICS_SENSOR_INTERVAL_S": "soon"})


def test_each_setting_is_read_in_one_module():
    readers = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        for variable in READ.findall(path.read_text()):
            readers[variable].add(str(path.relative_to(PACKAGE)))
    assert "METRICS_PARTITIONS_START" in readers and len(readers) > 40, sorted(readers)
    shared = {v: sorted(m) for v, m in readers.items() if len(m) > 1}
    assert not shared, shared
