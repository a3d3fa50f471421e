"""``Warehouse``: what a run does with one organization's rows of the ``finance`` schema."""

from __future__ import annotations

import datetime as dt

import duckdb

from finance_assets.endpoints import Endpoint
from finance_assets.schema import DEFAULT_ORGANIZATION, table_name
from finance_assets.warehouse import tables
from finance_assets.warehouse.staging import drop_all_staging
from finance_assets.warehouse.tables import ResourceSummary
from finance_assets.warehouse.window import OwnDatabase, WarehouseAccess
from finance_assets.warehouse.writer import FLUSH_ROWS, Writer


class Warehouse:
    """One organization's rows of the ``finance`` schema, reached from ``conn``: in its own
    database, or in the warehouse file ``warehouse`` attaches while a method needs it
    (writers then stage in ``conn``'s own database). The caller owns the connection."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        organization: str = DEFAULT_ORGANIZATION,
        warehouse: WarehouseAccess | None = None,
    ) -> None:
        self.conn = conn
        self.organization = organization
        self._warehouse = warehouse
        self._access = warehouse or OwnDatabase(conn)

    def drop_leftover_staging(self) -> int:
        """Drop what crashed runs left in the staging schema; how many tables there were.

        Call it once when a run opens the file for writing, before any writer starts:
        DuckDB lets one process write a file, so every staging table there then is a
        leftover. Writers never drop each other's tables, so writers of one run can
        start and end in any order.
        """
        with self._access.open(self.conn) as catalog:
            return drop_all_staging(self.conn, catalog)

    def ensure_tables(self, endpoint: Endpoint) -> None:
        """Upgrade, create (if missing) and check the resource's tables (idempotent)."""
        with self._access.open(self.conn) as catalog:
            tables.ensure_tables(self.conn, catalog, endpoint)

    def writer(
        self,
        endpoint: Endpoint,
        loaded_at: dt.datetime,
        flush_rows: int = FLUSH_ROWS,
        full_refresh: bool = False,
    ) -> Writer:
        """A ``Writer`` of this organization's rows of one resource, for a ``with`` block.

        ``flush_rows`` bounds the Arrow rows buffered in Python between staging inserts.
        """
        return Writer(
            self.conn,
            endpoint,
            loaded_at,
            full_refresh=full_refresh,
            flush_rows=flush_rows,
            organization=self.organization,
            warehouse=self._warehouse,
        )

    def sync_cursor(self, endpoint: Endpoint) -> dt.datetime | None:
        """The organization's committed cursor of the resource, where its next incremental
        read starts; None before its first sync."""
        with self._access.open(self.conn) as catalog:
            return tables.read_cursor(self.conn, catalog, endpoint, self.organization)

    def row_estimates(self) -> dict[str, int]:
        """Rows per table of the ``finance`` schema from DuckDB's catalog (no table scan)."""
        with self._access.open(self.conn) as catalog:
            return tables.row_estimates(self.conn, catalog)

    def row_count(self, endpoint: Endpoint) -> int:
        """The organization's rows in the parent table (0 when it does not exist)."""
        with self._access.open(self.conn) as catalog:
            return tables.organization_rows(
                self.conn, catalog, table_name(endpoint), self.organization
            )

    def summary(self, endpoint: Endpoint) -> ResourceSummary:
        """Row counts of the parent and child tables in one query (None for absent tables)."""
        with self._access.open(self.conn) as catalog:
            return tables.resource_summary(self.conn, catalog, endpoint)
