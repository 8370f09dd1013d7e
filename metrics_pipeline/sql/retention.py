"""Bounded deletes of rows older than a horizon (SQLAlchemy Core, every dialect: ``TOP n`` on
SQL Server, ``LIMIT n`` elsewhere, inside an ``IN`` subquery on the table's identity)."""

from datetime import datetime

from sqlalchemy import Column, Delete, Table, delete, select


def delete_batch(
    table: Table, identity: Column, time: Column, cutoff: datetime, rows: int
) -> Delete:
    """Delete at most ``rows`` rows with ``time < cutoff``, in one short statement that never
    holds locks on newer rows."""
    batch = select(identity).where(time < cutoff).limit(rows)
    return delete(table).where(identity.in_(batch))
