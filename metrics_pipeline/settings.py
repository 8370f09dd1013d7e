"""Settings read from the environment at the moment they are needed (never at import)."""

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
