"""The source each organization's data came from, so no run ever mixes two sources.

A file records each organization's source (the API's base URL, or the sandbox with its
seed and scale) in ``finance._source`` when a run first opens it; the source binds once data has
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

from finance_assets.schema import (
    DEFAULT_ORGANIZATION,
    SCHEMA,
    SOURCE_TABLE,
    SYNC_STATE_TABLE,
    current_catalog,
    in_catalog,
)
from finance_assets.warehouse.tables import ORGANIZATION, existing_tables

SANDBOX_PREFIX = "sandbox"  # how every sandbox source's name begins (``sandbox_source``)


class SourceMismatch(RuntimeError):
    """The warehouse file holds another source's data for the organization (or an
    unknown one's), or real books where sandbox data would go (or the reverse)."""


def recorded_sources(conn: duckdb.DuckDBPyConnection, catalog: str | None = None) -> dict[str, str]:
    """Each organization's recorded source (a file from before organizations: ``default``)."""
    catalog = catalog or current_catalog(conn)
    if SOURCE_TABLE not in existing_tables(conn, catalog):
        return {}
    table = in_catalog(catalog, SOURCE_TABLE)
    organization = _organization_of_rows(conn, table)
    rows = conn.execute(f"SELECT {organization}, source FROM {table}").fetchall()
    return {str(o): str(src) for o, src in rows}


def recorded_source(
    conn: duckdb.DuckDBPyConnection,
    organization: str = DEFAULT_ORGANIZATION,
    catalog: str | None = None,
) -> str | None:
    """The source the organization's data came from; None when none is recorded."""
    return recorded_sources(conn, catalog).get(organization)


def _is_sandbox(source: str) -> bool:
    return source.startswith(SANDBOX_PREFIX)


def check_source(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    database: str,
    organization: str = DEFAULT_ORGANIZATION,
    catalog: str | None = None,
) -> bool:
    """Raise ``SourceMismatch`` unless the file may receive ``source``'s data for
    ``organization`` (reads only).

    An organization keeps the source it first landed data from; sandbox data never joins
    real books in one file, nor real books sandbox data. Returns whether the source
    still has to be recorded (a new organization, or one whose recorded source never got
    data); the caller does that with ``record_source`` in the transaction of its first write.
    """
    catalog = catalog or current_catalog(conn)
    recorded = recorded_sources(conn, catalog)
    with_data = _organizations_with_data(conn, catalog)
    other_kind = sorted(
        f"{o} ({src})"
        for o, src in recorded.items()
        if o != organization and o in with_data and _is_sandbox(src) != _is_sandbox(source)
    )
    if other_kind:
        held = "sandbox data" if _is_sandbox(source) else "real books"
        raise SourceMismatch(
            f"{database} holds data of {', '.join(other_kind)}, but this run would add "
            f"{held} from {source} for {organization}; nothing was written. Point "
            "FINANCE_DUCKDB_PATH (or the warehouse path in defs.yaml) at another file, so "
            "synthetic and real books never mix."
        )
    if recorded.get(organization) == source:
        return False
    holds_data = organization in with_data
    if organization in recorded and holds_data:
        whose = "" if organization == DEFAULT_ORGANIZATION else f" for organization {organization}"
        raise SourceMismatch(
            f"{database} holds data from {recorded[organization]}{whose}, but this run reads "
            f"{source}; nothing was written. Point FINANCE_DUCKDB_PATH (or the warehouse path "
            "in defs.yaml) at another file, so the two sources never mix."
        )
    if not recorded and holds_data:
        raise SourceMismatch(
            f"{database} holds finance tables but no record of their source (it was written "
            f"before sources were recorded); nothing was written. If its data came from "
            f"{source}, record that once with `python -m finance_assets.warehouse.source "
            f"{database} --source '{source}'`; otherwise point FINANCE_DUCKDB_PATH at another "
            "file."
        )
    return True


def record_source(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    organization: str = DEFAULT_ORGANIZATION,
    catalog: str | None = None,
) -> None:
    """Record ``source`` as the organization's (the caller owns the transaction)."""
    catalog = catalog or current_catalog(conn)
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {in_catalog(catalog, SCHEMA)}")
    table = in_catalog(catalog, SOURCE_TABLE)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} "
        f"(source VARCHAR, recorded_at TIMESTAMPTZ, {ORGANIZATION} VARCHAR)"
    )
    if _organization_of_rows(conn, table) != ORGANIZATION:  # recorded before organizations
        conn.execute(
            f"ALTER TABLE {table} ADD COLUMN {ORGANIZATION} VARCHAR "
            f"DEFAULT '{DEFAULT_ORGANIZATION}'"
        )
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN {ORGANIZATION} DROP DEFAULT")
    conn.execute(f"DELETE FROM {table} WHERE {ORGANIZATION} = ?", [organization])
    conn.execute(
        f"INSERT INTO {table} VALUES (?, ?, ?)",
        [source, dt.datetime.now(dt.timezone.utc), organization],
    )


def _organization_of_rows(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """SQL for a bookkeeping table's organization column: the column, or ``'default'`` in
    a table written before organizations were recorded (the one connection's)."""
    columns = {r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall()}
    return ORGANIZATION if ORGANIZATION in columns else f"'{DEFAULT_ORGANIZATION}'"


def _organizations_with_data(conn: duckdb.DuckDBPyConnection, catalog: str) -> set[str]:
    """Organizations some resource has committed a load for: every merge writes its sync
    state. A file written before sources were recorded has data tables: ``default``'s."""
    present = existing_tables(conn, catalog)
    if SYNC_STATE_TABLE in present:
        table = in_catalog(catalog, SYNC_STATE_TABLE)
        organization = _organization_of_rows(conn, table)
        return {
            str(o)
            for (o,) in conn.execute(f"SELECT DISTINCT {organization} FROM {table}").fetchall()
        }
    return {DEFAULT_ORGANIZATION} if present - {SOURCE_TABLE} else set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the source of a warehouse file.")
    parser.add_argument("database", help="the DuckDB file")
    parser.add_argument("--source", required=True, help="the API base URL, as runs name it")
    parser.add_argument(
        "--organization", default=DEFAULT_ORGANIZATION, help="whose data it is (default: default)"
    )
    args = parser.parse_args(argv)
    with duckdb.connect(args.database) as conn:
        recorded = recorded_source(conn, args.organization)
        if recorded not in (None, args.source):
            print(f"{args.database} already records {recorded}; nothing changed.")
            return 1
        conn.begin()
        record_source(conn, args.source, args.organization)
        conn.commit()
    print(f"{args.database} now records its source as {args.source}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
