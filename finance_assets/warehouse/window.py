"""When a run reaches the warehouse file: only in short windows, so runs take turns.

DuckDB lets one process write a file at a time. A run stages its pages in a file of
its own and attaches the warehouse only to read its cursors, then to merge and check
one resource; the file is detached as soon as no thread of the run needs it. Runs of
other organizations so fetch side by side and write in turns, each turn waiting (for
a bounded time) while another run holds the file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Protocol

import duckdb

from finance_assets.schema import current_catalog
from finance_assets.warehouse.lock import open_waiting

WAREHOUSE_ALIAS = "warehouse"  # the warehouse's catalog name while attached


class WarehouseAccess(Protocol):
    """Where the warehouse's tables are: ``open(cursor)`` yields their catalog for a
    ``with`` block in which ``cursor`` (a cursor of the run's connection) uses them."""

    def open(self, cursor: duckdb.DuckDBPyConnection) -> AbstractContextManager[str]: ...


class OwnDatabase:
    """The connection's own database is the warehouse: always reachable."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._catalog = current_catalog(conn)

    @contextmanager
    def open(self, cursor: duckdb.DuckDBPyConnection) -> Iterator[str]:
        yield self._catalog


class AttachedWarehouse:
    """The warehouse file attached to a run's staging connection while anyone needs it.

    ``open()`` is re-entrant across the run's threads: the first attaches (waiting up to
    ``lock_timeout`` seconds while another process writes the file), the last detaches,
    which checkpoints and releases the file for the next run.
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        database: str,
        lock_timeout: float,
        alias: str = WAREHOUSE_ALIAS,
    ) -> None:
        self._conn = conn
        self._database = database
        self._lock_timeout = lock_timeout
        self.alias = alias
        self._guard = threading.Lock()
        self._users = 0
        self.windows = 0  # how many times the file was attached (each a turn at the lock)
        self.attach_seconds = 0.0  # time spent attaching, waiting for other processes included

    @contextmanager
    def open(self, cursor: duckdb.DuckDBPyConnection) -> Iterator[str]:
        with self._guard:
            if not self._users:
                path = self._database.replace("'", "''")
                asked = time.monotonic()
                open_waiting(
                    lambda: self._conn.execute(f"ATTACH '{path}' AS \"{self.alias}\""),
                    self._database,
                    self._lock_timeout,
                )
                self.attach_seconds += time.monotonic() - asked
                self.windows += 1
            self._users += 1
        try:
            yield self.alias
        finally:
            # A result not read to its end keeps the file attached: close it.
            with suppress(duckdb.Error):
                cursor.execute("SELECT 1").fetchall()
            with self._guard:
                self._users -= 1
                if not self._users:
                    self._conn.execute(f'DETACH "{self.alias}"')
