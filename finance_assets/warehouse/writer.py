"""Writing one resource: stage its pages, then merge them in one transaction.

Each page becomes Arrow tables that DuckDB scans into this writer's staging tables,
buffered up to ``FLUSH_ROWS`` rows per table and committed batch by batch, so memory
does not grow with the resource; the merge (``merge.py``) then commits everything at
once. Decimals travel as ``decimal128`` end to end, never as floats.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from finance_assets.endpoints import Endpoint
from finance_assets.records.json_text import json_text
from finance_assets.records.page_columns import PageColumns
from finance_assets.schema import (
    DEFAULT_ORGANIZATION,
    EXTRA_COLUMN,
    PARENT_ID_COLUMN,
    POSITION_COLUMN,
    ROW_COLUMN,
    current_catalog,
    model_columns,
    quoted,
)
from finance_assets.warehouse.merge import Merge, MergeHook, MergeOutcome
from finance_assets.warehouse.staging import ARRIVAL_COLUMN, StagingTable, StagingTables
from finance_assets.warehouse.tables import ensure_tables
from finance_assets.warehouse.window import OwnDatabase, WarehouseAccess

# Rows buffered per staging table before one bulk insert: each insert has a fixed cost,
# so small pages are batched; larger batches were no faster and hold more Arrow memory
# per writer, and several writers run at once.
FLUSH_ROWS = 10_000


@dataclass
class WriteStats:
    """What one resource write did; filled in when the transaction commits."""

    resource: str
    pages: int = 0
    rows_staged: int = 0  # parent records received, duplicates included
    distinct_ids: int = 0
    inserted: int = 0  # ids new to the table
    updated: int = 0  # ids that replaced an existing row (and all its children)
    child_rows: dict[str, int] = field(default_factory=dict)  # table -> rows inserted
    rejected: int = 0  # records quarantined in finance._rejected
    deleted: int = 0  # rows a full refresh marked with _deleted_at
    restored: int = 0  # rows marked deleted before that came back
    committed: bool = False


class RejectedRecord(Protocol):
    """What ``Writer.reject`` needs of a rejected record (e.g. ``validation.Rejected``)."""

    @property
    def record_id(self) -> str | None: ...
    @property
    def raw(self) -> Any: ...
    @property
    def reason(self) -> str: ...


class Writer:
    """One resource written in one transaction, as a context manager over its whole life.

    On enter the resource's tables are checked against the models and the writer's
    staging tables are created in the connection's own database; ``add`` and ``reject``
    stage pages, in batches committed on their own so memory stays bounded; a clean exit
    stages the last batch and merges everything into ``organization``'s rows of the
    warehouse in one transaction (``Merge``), inside one window of ``warehouse`` (the
    connection's own database unless given); an exception leaves every table as it was
    and re-raises. The staging tables are dropped either way.

    ``before_merge_statement`` is called with each step of the merge transaction just
    before its statement runs; ``merge_shortcuts=False`` makes the merge run every
    statement even where its probe shows one cannot change a row (same results).
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        endpoint: Endpoint,
        loaded_at: dt.datetime,
        *,
        full_refresh: bool = False,
        flush_rows: int = FLUSH_ROWS,
        organization: str = DEFAULT_ORGANIZATION,
        warehouse: WarehouseAccess | None = None,
        before_merge_statement: MergeHook | None = None,
        merge_shortcuts: bool = True,
    ) -> None:
        if loaded_at.tzinfo is None:
            raise ValueError("loaded_at must be timezone-aware")
        self._conn = conn
        self._endpoint = endpoint
        self._loaded_at = loaded_at
        self._full_refresh = full_refresh
        self._flush_rows = flush_rows
        self._organization = organization
        self._warehouse = warehouse or OwnDatabase(conn)
        self._separate_staging = warehouse is not None
        self._before_merge_statement = before_merge_statement
        self._merge_shortcuts = merge_shortcuts
        self._staging = StagingTables(current_catalog(conn), endpoint)
        self._seen_ranges: list[tuple[str, str]] = []
        self._cursor: dt.datetime | None = None
        self._buffers: dict[StagingTable, list[pa.Table]] = {}
        self._buffered: dict[StagingTable, int] = {}
        self._parent = list(model_columns(endpoint.model))
        self._children = {f: list(model_columns(m)) for f, m in endpoint.children.items()}
        self._arrivals = 0
        self.stats = WriteStats(endpoint.name)

    def __enter__(self) -> Writer:
        if not self._separate_staging:  # (a run checks its tables once, when it starts)
            self._conn.begin()  # the tables match the models: fail before any page is fetched
            try:
                ensure_tables(self._conn, self._staging.catalog, self._endpoint)
            finally:
                self._conn.rollback()  # nothing is created before the merge transaction
        try:
            self._staging.create(self._conn)
        except BaseException:
            self._staging.drop(self._conn)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._flush_all()  # the last pages, still outside the transaction
                with self._warehouse.open(self._conn) as catalog:
                    outcome = Merge(
                        self._conn,
                        catalog,
                        self._endpoint,
                        self._staging,
                        loaded_at=self._loaded_at,
                        full_refresh=self._full_refresh,
                        seen_ranges=self._seen_ranges,
                        cursor=self._cursor,
                        organization=self._organization,
                        before_statement=self._before_merge_statement,
                        shortcuts=self._merge_shortcuts,
                    ).run()
                self._record(outcome)
        finally:
            if self._separate_staging or not self.stats.committed:  # else the merge dropped them
                self._staging.drop(self._conn)

    def _record(self, outcome: MergeOutcome) -> None:
        stats = self.stats
        stats.distinct_ids, stats.inserted, stats.updated = (
            outcome.distinct_ids,
            outcome.inserted,
            outcome.updated,
        )
        stats.restored, stats.deleted = outcome.restored, outcome.deleted
        stats.child_rows = dict(outcome.child_rows)
        stats.committed = True

    def add(self, page: PageColumns) -> None:
        """Stage one page of validated records (from either way of reading it)."""
        parent, children = page.parent, page.children
        n = parent.num_rows
        if not n:
            return
        ids = parent.column(self._endpoint.primary_key)
        if ids.null_count:
            raise ValueError(f"{self._endpoint.name}: a record without id cannot be merged")
        arrivals = pa.array(range(self._arrivals, self._arrivals + n), type=pa.int64())
        columns: dict[str, pa.Array] = {ARRIVAL_COLUMN: arrivals}
        for spec in self._parent:
            columns[spec.name] = parent.column(spec.name)
        columns[EXTRA_COLUMN] = parent.column(EXTRA_COLUMN)
        ready = [(self._staging.parent, columns)]
        for child, specs in self._children.items():
            table = children.get(child)
            if table is None or not table.num_rows:
                continue
            rows = table.column(ROW_COLUMN)
            child_columns: dict[str, pa.Array] = {
                ARRIVAL_COLUMN: arrivals.take(rows),
                PARENT_ID_COLUMN: ids.take(rows),
                POSITION_COLUMN: table.column(POSITION_COLUMN),
            }
            for spec in specs:
                child_columns[spec.name] = table.column(spec.name)
            child_columns[EXTRA_COLUMN] = table.column(EXTRA_COLUMN)
            ready.append((self._staging.children[child], child_columns))
        # Every table of the page is built by now (or none was): append them all.
        for stage, cols in ready:
            self._append(stage, cols)
        self._arrivals += n
        self.stats.pages += 1
        self.stats.rows_staged += n

    def reject(self, records: Sequence[RejectedRecord]) -> None:
        """Stage records the schema cannot hold for ``finance._rejected`` (same transaction)."""
        if not records:
            return
        self._append(
            self._staging.rejected,
            {
                "id": pa.array([r.record_id for r in records], type=pa.string()),
                "reason": pa.array([r.reason for r in records], type=pa.string()),
                "raw": pa.array([json_text(r.raw) for r in records], type=pa.string()),
            },
        )
        self.stats.rejected += len(records)

    def seen_range(self, low: str, high: str) -> None:
        """Full refresh: the pass saw every record that existed with ``low <= order key <= high``.

        The caller derives ranges from pages (a page is a contiguous slice of the list
        when served); a record missing inside one is deleted, one between ranges may
        only have been skipped by a shift and is left alone.
        """
        self._seen_ranges.append((low, high))

    def set_cursor(self, cursor: dt.datetime | None) -> None:
        """The cursor to commit with this write (the next incremental read starts there)."""
        self._cursor = cursor

    def _append(self, stage: StagingTable, columns: dict[str, pa.Array]) -> None:
        page = pa.Table.from_pydict(columns)
        self._buffers.setdefault(stage, []).append(page)
        self._buffered[stage] = self._buffered.get(stage, 0) + page.num_rows
        if self._buffered[stage] >= self._flush_rows:
            self._flush(stage)

    def _flush_all(self) -> None:
        for stage in list(self._buffers):
            self._flush(stage)

    def _flush(self, stage: StagingTable) -> None:
        """One bulk insert of the buffered pages: DuckDB scans the Arrow table."""
        pages = self._buffers.pop(stage, [])
        self._buffered.pop(stage, None)
        if not pages:
            return
        data = pa.concat_tables(pages)
        view = f"{stage.name}__batch"
        self._conn.register(view, data)
        try:  # outside any transaction: each bulk insert commits on its own (to disk)
            cols = ", ".join(quoted(c) for c in data.column_names)
            self._conn.execute(f"INSERT INTO {stage.qualified} ({cols}) SELECT {cols} FROM {view}")
        finally:
            self._conn.unregister(view)
