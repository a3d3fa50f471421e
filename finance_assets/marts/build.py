"""Runs the marts' SQL on a DuckDB connection: snapshot marts replace the rows of their
as-of dates, the others are rebuilt whole; checks count the rows their SQL returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb

from finance_assets.marts import as_of as as_of_dates
from finance_assets.marts.catalog import SCHEMA, Mart, MartCheck

SQL_DIR = Path(__file__).parent / "sql"
SAMPLES = 10


@cache
def sql_text(name: str) -> str:
    """A file of ``sql/`` by its stem (``checks/<name>`` for a check)."""
    return (SQL_DIR / f"{name}.sql").read_text()


def sql_file(name: str) -> str:
    """Where an analyst finds the SQL, relative to the project."""
    return f"finance_assets/marts/sql/{name}.sql"


@dataclass(frozen=True)
class Violations:
    """What a check's SQL returned: how many rows, and the first few."""

    count: int
    samples: list[tuple[str, str, str]]  # (organization, record, problem)


class MartBuilder:
    """The marts of one run on one connection, for one set of as-of dates."""

    def __init__(
        self, conn: duckdb.DuckDBPyConnection, as_of: dt.date | None, now: dt.datetime
    ) -> None:
        self.conn = conn
        self.dates = as_of_dates.resolve(conn, as_of, now)
        as_of_dates.register(conn, self.dates)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(sql_text("_shared"))

    def build(self, mart: Mart) -> int:
        """Write the mart's rows (in a transaction of its own); returns the row count."""
        query = sql_text(mart.name)
        conn = self.conn
        conn.begin()
        if mart.snapshot:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {mart.table} AS FROM ({query}) LIMIT 0")
            conn.execute(
                f"DELETE FROM {mart.table} WHERE (organization, as_of) IN "
                f"(SELECT (organization, as_of) FROM {as_of_dates.AS_OF_TABLE})"
            )
            conn.execute(f"INSERT INTO {mart.table} BY NAME ({query})")
        else:
            conn.execute(f"CREATE OR REPLACE TABLE {mart.table} AS ({query})")
        self._same_columns(mart)
        conn.commit()
        return self.row_count(mart)

    def row_count(self, mart: Mart) -> int:
        """The mart's rows of this run's as-of dates (all rows if not a snapshot)."""
        where = ""
        if mart.snapshot:
            where = (f" WHERE (organization, as_of) IN "
                     f"(SELECT (organization, as_of) FROM {as_of_dates.AS_OF_TABLE})")  # fmt: skip
        row = self.conn.execute(f"SELECT count(*) FROM {mart.table}{where}").fetchone()
        return int(row[0]) if row else 0

    def _same_columns(self, mart: Mart) -> None:
        """The table has the declared columns (names and types), so the schema Dagster
        shows is the one an analyst queries; an edited SQL file must edit the list too."""
        found = [(r[0], r[1]) for r in self.conn.execute(f"DESCRIBE {mart.table}").fetchall()]
        declared = [(c.name, c.sql_type) for c in mart.columns]
        if found != declared:
            self.conn.rollback()
            raise ValueError(
                f"{mart.table} has columns {found}, but finance_assets/marts/catalog.py "
                f"declares {declared}; change one to match the other."
            )

    def check(self, check: MartCheck) -> Violations:
        """The violations the check's SQL finds."""
        query = sql_text(f"checks/{check.name}")
        row = self.conn.execute(f"SELECT count(*) FROM ({query})").fetchone()
        samples = self.conn.execute(
            f"SELECT organization, record, problem FROM ({query}) "
            f"ORDER BY organization, record LIMIT {SAMPLES}"
        ).fetchall()
        return Violations(int(row[0]) if row else 0, [tuple(s) for s in samples])
