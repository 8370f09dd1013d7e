"""Settings read from the environment at the moment they are needed (never at import)."""

import argparse
import os
from collections.abc import Mapping


def from_env(cls, variables: Mapping[str, str], environ: Mapping[str, str] | None = None):
    """An instance of the settings dataclass ``cls``: each field from its variable when that is
    set, converted to the type of the field's default, else the default."""
    env = os.environ if environ is None else environ
    values = {
        field: type(getattr(cls, field))(env[variable])
        for field, variable in variables.items()
        if env.get(variable)
    }
    return cls(**values)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port
