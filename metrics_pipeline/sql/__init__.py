"""Pure query builders over SQLAlchemy Core: (names, window, billers) -> statement.

Nothing here connects to a database or imports Dagster. Every statement must compile for the
mssql, postgresql and sqlite dialects (tests compile them all and parse the T-SQL).
"""
