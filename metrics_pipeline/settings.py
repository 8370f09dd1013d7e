"""Settings read from the environment at the moment they are needed (never at import).

Every family's settings are frozen dataclasses read by :func:`from_env`: one variable per field,
converted to the type of the field's default, a wrong value refused in one line naming it.
"""

import argparse
import os
from collections.abc import Mapping

from metrics_pipeline.resources.engines import ConfigurationError


def convert(variable: str, raw: str, kind: type, what: str | None = None):
    """``raw``, the value of ``variable``, as ``kind``; a :class:`ConfigurationError` naming the
    variable (and ``what`` was expected, by default the type's name) when it does not convert."""
    try:
        return kind(raw)
    except ValueError:
        expected = what or kind.__name__
        raise ConfigurationError(f"{variable}: expected {expected}, got {raw!r}") from None


def bounded_int(environ: Mapping[str, str], variable: str, default: int, minimum: int) -> int:
    """An integer setting of at least ``minimum`` (``default`` when unset), refused in one line
    naming the variable otherwise."""
    raw = environ.get(variable)
    if not raw:
        return default
    value = convert(variable, raw, int, "an integer")
    if value < minimum:
        raise ConfigurationError(f"{variable}: must be at least {minimum}, got {value}")
    return value


def from_env(cls, variables: Mapping[str, str], environ: Mapping[str, str] | None = None, **given):
    """An instance of the settings dataclass ``cls``: each field from its variable when that is
    set, converted to the type of the field's default (:func:`convert`), else the default;
    ``given`` fields are set by the caller."""
    env = os.environ if environ is None else environ
    values = dict(given)
    for field, variable in variables.items():
        if env.get(variable):
            values[field] = convert(variable, env[variable], type(getattr(cls, field)))
    return cls(**values)


def sensor_interval(environ: Mapping[str, str] | None = None) -> dict:
    """METRICS_SENSOR_INTERVAL_S, the one override of every family's sensor intervals (tests,
    or a deployment that wants them faster), as a sensor's keyword argument; empty when unset."""
    env = os.environ if environ is None else environ
    raw = env.get("METRICS_SENSOR_INTERVAL_S")
    return (
        {"minimum_interval_seconds": convert("METRICS_SENSOR_INTERVAL_S", raw, int)} if raw else {}
    )


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port
