"""DuckDB warehouse: one table per resource, child tables for nested arrays.

Writes are bulk and transactional: a ``Writer`` stages a resource's pages in
committed batches (``staging.py``, ``writer.py``), then one transaction upserts by
``id``, quarantines, marks proven deletions and saves the cursor (``merge.py``); on
any exception the resource's tables stay as they were. ``tables.py`` derives the
tables from the models and reads counts back; ``lock.py`` waits for DuckDB's
one-writer-per-file lock; ``source.py`` keeps each file to the one source its data
came from. Nothing here knows HTTP or Dagster.
"""

from finance_assets.warehouse.database import Warehouse
from finance_assets.warehouse.list_order import HIGHEST_KEY, LOWEST_KEY, order_key
from finance_assets.warehouse.lock import (
    WarehouseBusyError,
    connect_waiting,
    is_lock_conflict,
    locked_connection,
)
from finance_assets.warehouse.merge import MergeHook, MergeStep
from finance_assets.warehouse.run_file import abandoned_run_folders, run_database
from finance_assets.warehouse.source import (
    SOURCE_TABLE,
    SourceMismatch,
    check_source,
    record_source,
    recorded_source,
)
from finance_assets.warehouse.staging import STAGING_SCHEMA
from finance_assets.warehouse.tables import (
    FULL_REFRESH,
    INCREMENTAL,
    ResourceSummary,
    summary_rows,
)
from finance_assets.warehouse.window import AttachedWarehouse, OwnDatabase, WarehouseAccess
from finance_assets.warehouse.writer import FLUSH_ROWS, RejectedRecord, Writer, WriteStats

__all__ = [
    "AttachedWarehouse",
    "OwnDatabase",
    "WarehouseAccess",
    "FLUSH_ROWS",
    "FULL_REFRESH",
    "HIGHEST_KEY",
    "INCREMENTAL",
    "LOWEST_KEY",
    "STAGING_SCHEMA",
    "MergeHook",
    "MergeStep",
    "RejectedRecord",
    "ResourceSummary",
    "SOURCE_TABLE",
    "SourceMismatch",
    "Warehouse",
    "WarehouseBusyError",
    "WriteStats",
    "Writer",
    "abandoned_run_folders",
    "check_source",
    "connect_waiting",
    "is_lock_conflict",
    "locked_connection",
    "order_key",
    "record_source",
    "recorded_source",
    "run_database",
    "summary_rows",
]
