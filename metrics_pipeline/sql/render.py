"""Statements as text for people: the SQL an analyst reads in the asset's metadata."""

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement


def render(statement: ClauseElement, dialect: Dialect) -> str:
    """The statement compiled for ``dialect``, with values inlined where the dialect can."""
    try:
        return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    except Exception:  # some dialects cannot inline every type (e.g. datetimes)
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        params = ", ".join(f"{k}={v!r}" for k, v in compiled.params.items())
        return f"{compiled}\n-- parameters: {params}"
