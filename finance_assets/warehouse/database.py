"""``Warehouse``: what a run does with the ``finance`` schema of one DuckDB connection."""

from __future__ import annotations

import datetime as dt

import duckdb

from finance_assets.endpoints import Endpoint
from finance_assets.schema import current_catalog, table_name
from finance_assets.warehouse import tables
from finance_assets.warehouse.staging import drop_all_staging
from finance_assets.warehouse.tables import ResourceSummary
from finance_assets.warehouse.writer import FLUSH_ROWS, Writer


class Warehouse:
    """The ``finance`` schema in one DuckDB connection (the caller owns the connection)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn
        self.catalog = current_catalog(conn)

    def drop_leftover_staging(self) -> int:
        """Drop what crashed runs left in the staging schema; how many tables there were.

        Call it once when a run opens the file for writing, before any writer starts:
        DuckDB lets one process write a file, so every staging table there then is a
        leftover. Writers never drop each other's tables, so writers of one run can
        start and end in any order.
        """
        return drop_all_staging(self.conn, self.catalog)

    def ensure_tables(self, endpoint: Endpoint) -> None:
        """Create the schema, the parent table and its child tables if missing (idempotent)."""
        tables.ensure_tables(self.conn, self.catalog, endpoint)

    def writer(
        self,
        endpoint: Endpoint,
        loaded_at: dt.datetime,
        flush_rows: int = FLUSH_ROWS,
        full_refresh: bool = False,
    ) -> Writer:
        """A ``Writer`` of one resource on this connection, for a ``with`` block.

        ``flush_rows`` bounds the Arrow rows buffered in Python between staging inserts.
        """
        return Writer(
            self.conn,
            endpoint,
            loaded_at,
            full_refresh=full_refresh,
            flush_rows=flush_rows,
            catalog=self.catalog,
        )

    def sync_cursor(self, endpoint: Endpoint) -> dt.datetime | None:
        """The resource's committed cursor, where its next incremental read starts; None
        before its first sync."""
        return tables.read_cursor(self.conn, self.catalog, endpoint)

    def row_estimates(self) -> dict[str, int]:
        """Rows per table of the ``finance`` schema from DuckDB's catalog (no table scan)."""
        return tables.row_estimates(self.conn, self.catalog)

    def row_count(self, endpoint: Endpoint) -> int:
        """Rows in the parent table (0 when it does not exist)."""
        parent = table_name(endpoint)
        return tables.count_rows(self.conn, self.catalog, [parent])[parent] or 0

    def summary(self, endpoint: Endpoint) -> ResourceSummary:
        """Row counts of the parent and child tables in one query (None for absent tables)."""
        return tables.resource_summary(self.conn, self.catalog, endpoint)
