"""The ``finance`` tables: DDL derived from the models, the check that a table still
matches its model, and what a run reads back (table names, row counts, summaries,
the committed cursor)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from finance_assets.endpoints import Endpoint
from finance_assets.schema import (
    DEFAULT_ORGANIZATION,
    LOADED_AT_COLUMN,
    ORGANIZATION_COLUMN,
    REJECTED_TABLE,
    SCHEMA,
    SOURCE_TABLE,
    SYNC_STATE_TABLE,
    ColumnSpec,
    child_column_specs,
    child_table_name,
    column_specs,
    current_catalog,
    in_catalog,
    quoted,
    table_name,
    table_names,
)

# The bookkeeping tables' column naming the organization (last: upgrades add it at the end).
ORGANIZATION = "organization"

# Quarantine: records the schema cannot hold, one row per (organization, resource, id)
# or per raw payload.
_QUARANTINE_COLUMNS = (
    ("resource", "VARCHAR"),
    ("id", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("raw", "JSON"),
    (LOADED_AT_COLUMN, "TIMESTAMPTZ"),
    (ORGANIZATION, "VARCHAR"),
)

# One row per (organization, resource): the incremental cursor, committed with the data
# it describes.
_SYNC_STATE_COLUMNS = (
    ("resource", "VARCHAR"),
    ("cursor", "TIMESTAMPTZ"),
    ("mode", "VARCHAR"),
    ("synced_at", "TIMESTAMPTZ"),
    ("last_full_refresh_at", "TIMESTAMPTZ"),
    (ORGANIZATION, "VARCHAR"),
)

# The values of ``mode`` in the sync state: how a resource was last read.
FULL_REFRESH, INCREMENTAL = "full", "incremental"

# information_schema spells some types in full.
_INFORMATION_SCHEMA_TYPE = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}


@dataclass(frozen=True)
class ResourceSummary:
    """Row counts of a resource's tables; ``rows`` is None when never materialized."""

    table: str
    rows: int | None
    child_rows: dict[str, int | None]


# ---------- DDL and the model/table match ----------
def resource_columns(endpoint: Endpoint) -> dict[str, list[ColumnSpec]]:
    """The resource's tables (parent, then children) and their columns."""
    tables = {table_name(endpoint): column_specs(endpoint.model)}
    for child, item_model in endpoint.children.items():
        tables[child_table_name(endpoint, child)] = child_column_specs(item_model)
    return tables


def _bookkeeping() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    return ((REJECTED_TABLE, _QUARANTINE_COLUMNS), (SYNC_STATE_TABLE, _SYNC_STATE_COLUMNS))


def create_statements(catalog: str, endpoint: Endpoint) -> list[str]:
    """``CREATE ... IF NOT EXISTS`` for the schema, the resource's tables and the bookkeeping."""
    statements = [f"CREATE SCHEMA IF NOT EXISTS {in_catalog(catalog, SCHEMA)}"]
    for table, specs in resource_columns(endpoint).items():
        ddl = ", ".join(f"{quoted(s.name)} {s.sql_type}" for s in specs)
        statements.append(f"CREATE TABLE IF NOT EXISTS {in_catalog(catalog, table)} ({ddl})")
    for table, columns in _bookkeeping():
        ddl = ", ".join(f"{quoted(c)} {t}" for c, t in columns)
        statements.append(f"CREATE TABLE IF NOT EXISTS {in_catalog(catalog, table)} ({ddl})")
    return statements


def upgrade_statements(
    conn: duckdb.DuckDBPyConnection, catalog: str, endpoint: Endpoint
) -> list[str]:
    """What brings a resource's tables written before organizations were recorded to
    today's layout: each gains its organization column, filled with ``default`` (the one
    connection that wrote them). Empty when the tables are current or absent."""
    wanted = {t: ORGANIZATION_COLUMN for t in resource_columns(endpoint)}
    wanted.update({t: ORGANIZATION for t in (REJECTED_TABLE, SYNC_STATE_TABLE, SOURCE_TABLE)})
    rows = conn.execute(
        "SELECT schema_name || '.' || table_name, list(column_name) FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name = ? GROUP BY ALL",
        [catalog, SCHEMA],
    ).fetchall()
    statements = []
    for table, columns in rows:
        column = wanted.get(table)
        if column is None or column in columns:
            continue
        qualified = in_catalog(catalog, table)
        statements += [
            f"ALTER TABLE {qualified} ADD COLUMN {quoted(column)} VARCHAR "
            f"DEFAULT '{DEFAULT_ORGANIZATION}'",
            f"ALTER TABLE {qualified} ALTER COLUMN {quoted(column)} DROP DEFAULT",
        ]
    return statements


def check_tables_match(conn: duckdb.DuckDBPyConnection, catalog: str, endpoint: Endpoint) -> None:
    """Fail loudly, before loading, if a table drifted from its model (no schema evolution)."""
    for table, specs in resource_columns(endpoint).items():
        schema, name = table.split(".")
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_catalog = ? AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [catalog, schema, name],
        ).fetchall()
        expected = [(s.name, _INFORMATION_SCHEMA_TYPE.get(s.sql_type, s.sql_type)) for s in specs]
        if rows != expected:
            raise RuntimeError(
                f"{table} does not match the model (schema evolution is not supported): "
                f"expected {expected}, found {rows}"
            )


def ensure_tables(conn: duckdb.DuckDBPyConnection, catalog: str, endpoint: Endpoint) -> None:
    """Upgrade the resource's tables to today's layout, create what is missing (with the
    bookkeeping), then check them against the models."""
    for statement in [
        *upgrade_statements(conn, catalog, endpoint),
        *create_statements(catalog, endpoint),
    ]:
        conn.execute(statement)
    check_tables_match(conn, catalog, endpoint)


# ---------- what a run reads back ----------
def existing_tables(conn: duckdb.DuckDBPyConnection, catalog: str) -> set[str]:
    """Qualified names of the tables in the ``finance`` schema."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = ? AND table_schema = ?",
        [catalog, SCHEMA],
    ).fetchall()
    return {f"{SCHEMA}.{name}" for (name,) in rows}


def row_estimates(conn: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, int]:
    """Rows per table of the ``finance`` schema from DuckDB's catalog (no table scan)."""
    rows = conn.execute(
        "SELECT table_name, estimated_size FROM duckdb_tables() "
        "WHERE database_name = ? AND schema_name = ?",
        [catalog, SCHEMA],
    ).fetchall()
    return {f"{SCHEMA}.{name}": int(size or 0) for name, size in rows}


def count_rows(
    conn: duckdb.DuckDBPyConnection, catalog: str, tables: Sequence[str]
) -> dict[str, int | None]:
    """Rows of each ``finance`` table, counted in one query; None for a table that is absent."""
    present = existing_tables(conn, catalog)
    counts: dict[str, int | None] = dict.fromkeys(tables)
    counted = [t for t in counts if t in present]
    if counted:
        row = conn.execute(
            "SELECT "
            + ", ".join(f"(SELECT count(*) FROM {in_catalog(catalog, t)})" for t in counted)
        ).fetchone()
        assert row is not None
        counts.update(zip(counted, (int(n) for n in row), strict=True))
    return counts


def organization_rows(
    conn: duckdb.DuckDBPyConnection, catalog: str, table: str, organization: str
) -> int:
    """The organization's rows of a ``finance`` table (0 when the table is absent)."""
    if table not in existing_tables(conn, catalog):
        return 0
    row = conn.execute(
        f"SELECT count(*) FROM {in_catalog(catalog, table)} "
        f"WHERE {quoted(ORGANIZATION_COLUMN)} = ?",
        [organization],
    ).fetchone()
    return int(row[0]) if row else 0


def resource_summary(
    conn: duckdb.DuckDBPyConnection, catalog: str, endpoint: Endpoint
) -> ResourceSummary:
    """Row counts of the parent and child tables (None for absent tables)."""
    parent, *children = table_names(endpoint)
    counts = count_rows(conn, catalog, [parent, *children])
    return ResourceSummary(parent, counts[parent], {t: counts[t] for t in children})


def summary_rows(
    conn: duckdb.DuckDBPyConnection, endpoints: Sequence[Endpoint]
) -> list[tuple[str, int]]:
    """(table, rows) for every parent and child table, then the quarantine; 0 when absent.

    The quarantine is listed only once it exists.
    """
    tables = [t for endpoint in endpoints for t in table_names(endpoint)]
    counts = count_rows(conn, current_catalog(conn), [*tables, REJECTED_TABLE])
    out = [(t, counts[t] or 0) for t in tables]
    quarantined = counts[REJECTED_TABLE]
    if quarantined is not None:
        out.append((REJECTED_TABLE, quarantined))
    return out


def read_cursor(
    conn: duckdb.DuckDBPyConnection,
    catalog: str,
    endpoint: Endpoint,
    organization: str = DEFAULT_ORGANIZATION,
) -> dt.datetime | None:
    """The organization's committed cursor of the resource; None before its first sync."""
    if SYNC_STATE_TABLE not in existing_tables(conn, catalog):
        return None
    row = conn.execute(
        f"SELECT cursor FROM {in_catalog(catalog, SYNC_STATE_TABLE)} "
        f"WHERE resource = ? AND {ORGANIZATION} = ?",
        [endpoint.name, organization],
    ).fetchone()
    return row[0] if row else None
