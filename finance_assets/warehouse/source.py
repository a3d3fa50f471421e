"""The source a warehouse file holds data from, so no run ever mixes two sources in one file.

A file records its source (the API's base URL, or the sandbox with its seed and scale)
in ``finance._source`` when a run first opens it; the source binds once data has
landed (a first run that failed before any endpoint committed does not lock the file
to a mistyped URL). A run from any other source refuses to write, before it sends a
request, and leaves the file as it was: plausible synthetic
numbers in real books are the worst failure a finance warehouse can have.

    python -m finance_assets.warehouse.source data/warehouse.duckdb --source https://api.example.com

records the source of a file written before sources were recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt

import duckdb

from finance_assets.schema import SCHEMA, SYNC_STATE_TABLE, current_catalog, in_catalog
from finance_assets.warehouse.tables import existing_tables

SOURCE_TABLE = f"{SCHEMA}._source"


class SourceMismatch(RuntimeError):
    """The warehouse file holds another source's data (or an unknown one's)."""


def recorded_source(conn: duckdb.DuckDBPyConnection) -> str | None:
    """The source the file's data came from; None when none is recorded."""
    catalog = current_catalog(conn)
    if SOURCE_TABLE not in existing_tables(conn, catalog):
        return None
    row = conn.execute(f"SELECT source FROM {in_catalog(catalog, SOURCE_TABLE)}").fetchone()
    return str(row[0]) if row else None


def check_source(conn: duckdb.DuckDBPyConnection, source: str, database: str) -> bool:
    """Raise ``SourceMismatch`` unless the file may receive ``source``'s data (reads only).

    Returns whether the source still has to be recorded (a new file, or one whose
    recorded source never got data); the caller does that with ``record_source`` in
    the transaction of its first write.
    """
    recorded = recorded_source(conn)
    if recorded == source:
        return False
    holds_data = _holds_data(conn)
    if recorded is not None and holds_data:
        raise SourceMismatch(
            f"{database} holds data from {recorded}, but this run reads {source}; nothing was "
            "written. Point FINANCE_DUCKDB_PATH (or the warehouse path in defs.yaml) at "
            "another file, so the two sources never mix."
        )
    if recorded is None and holds_data:
        raise SourceMismatch(
            f"{database} holds finance tables but no record of their source (it was written "
            f"before sources were recorded); nothing was written. If its data came from "
            f"{source}, record that once with `python -m finance_assets.warehouse.source "
            f"{database} --source '{source}'`; otherwise point FINANCE_DUCKDB_PATH at another "
            "file."
        )
    return True


def record_source(conn: duckdb.DuckDBPyConnection, source: str) -> None:
    """Record ``source`` as the file's (the caller owns the transaction)."""
    catalog = current_catalog(conn)
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {in_catalog(catalog, SCHEMA)}")
    table = in_catalog(catalog, SOURCE_TABLE)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (source VARCHAR, recorded_at TIMESTAMPTZ)")
    conn.execute(f"DELETE FROM {table}")
    conn.execute(
        f"INSERT INTO {table} VALUES (?, ?)", [source, dt.datetime.now(dt.timezone.utc)]
    )


def _holds_data(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether any resource has committed a load: every merge writes its sync state, and
    a file written before sources were recorded has data tables."""
    catalog = current_catalog(conn)
    present = existing_tables(conn, catalog)
    if SYNC_STATE_TABLE in present:
        return bool(
            conn.execute(f"SELECT count(*) FROM {in_catalog(catalog, SYNC_STATE_TABLE)}")
            .fetchone()[0]  # type: ignore[index]
        )
    return bool(present - {SOURCE_TABLE})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the source of a warehouse file.")
    parser.add_argument("database", help="the DuckDB file")
    parser.add_argument("--source", required=True, help="the API base URL, as runs name it")
    args = parser.parse_args(argv)
    with duckdb.connect(args.database) as conn:
        recorded = recorded_source(conn)
        if recorded not in (None, args.source):
            print(f"{args.database} already records {recorded}; nothing changed.")
            return 1
        conn.begin()
        record_source(conn, args.source)
        conn.commit()
    print(f"{args.database} now records its source as {args.source}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
