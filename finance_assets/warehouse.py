"""DuckDB warehouse: one table per resource, child tables for nested arrays.

Writes are bulk and transactional: each API page becomes an Arrow table that
DuckDB scans into a staging table of the ``_finance_staging`` schema (committed in
batches, so memory does not grow with the resource); at the end one transaction
upserts by ``id`` set-wise (last occurrence in the run wins, children replaced
wholesale) and commits; on any exception the resource's tables stay as they were.
Decimals travel as ``decimal128`` end to end, never as floats. Nothing here knows
HTTP or Dagster.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from finance_assets.endpoints import Endpoint
from finance_assets.records.json_text import json_text
from finance_assets.records.page_columns import PageColumns
from finance_assets.schema import (
    DELETED_AT_COLUMN,
    EXTRA_COLUMN,
    LOADED_AT_COLUMN,
    PARENT_ID_COLUMN,
    POSITION_COLUMN,
    REJECTED_TABLE,
    ROW_COLUMN,
    SCHEMA,
    SYNC_STATE_TABLE,
    ColumnSpec,
    child_column_specs,
    child_table_name,
    column_specs,
    current_catalog,
    in_catalog,
    model_columns,
    q,
    table_name,
    table_names,
)

# Quarantine: records the schema cannot hold, one row per (resource, id) or per raw payload.
_REJECTED_COLUMNS = (
    ("resource", "VARCHAR"),
    ("id", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("raw", "JSON"),
    (LOADED_AT_COLUMN, "TIMESTAMPTZ"),
)


# One row per resource: the incremental cursor, committed with the data it describes.
_SYNC_STATE_COLUMNS = (
    ("resource", "VARCHAR"),
    ("cursor", "TIMESTAMPTZ"),
    ("mode", "VARCHAR"),
    ("synced_at", "TIMESTAMPTZ"),
    ("last_full_refresh_at", "TIMESTAMPTZ"),
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LOWEST_KEY, HIGHEST_KEY = "", "~"  # below / above every order key (keys are digits)
# SQL twin of ``order_key``: the API's list order, (created_time as an instant, numeric id).
_ORDER_KEY_SQL = "lpad(epoch_us(created_time)::VARCHAR, 20, '0') || lpad(id, 40, '0')"


def order_key(created_time: dt.datetime, record_id: str) -> str:
    """A string that sorts as the API lists records: created_time instant, then numeric id."""
    micros = (created_time - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros:020d}{record_id:0>40}"


@dataclass(frozen=True)
class SyncState:
    """A resource's committed sync bookkeeping."""

    cursor: dt.datetime | None
    mode: str
    synced_at: dt.datetime
    last_full_refresh_at: dt.datetime | None


class RejectedRecord(Protocol):
    """What ``Writer.reject`` needs of a rejected record (e.g. ``validation.Rejected``)."""

    @property
    def record_id(self) -> str | None: ...
    @property
    def raw(self) -> Any: ...
    @property
    def reason(self) -> str: ...

# information_schema spells some types in full.
_INFO_SCHEMA_TYPE = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
_SEQ = "_seq"  # staging only: global arrival order of a parent record within one run



def _cols(specs: Sequence[ColumnSpec]) -> str:
    return ", ".join(q(s.name) for s in specs)


# ---------- results ----------
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


@dataclass(frozen=True)
class ResourceSummary:
    """Row counts of a resource's tables; ``rows`` is None when never materialized."""

    table: str
    rows: int | None
    child_rows: dict[str, int | None]


# ---------- writer ----------
def _stage_name(endpoint: Endpoint, child: str | None = None) -> str:
    return f"_stage__{endpoint.name}" + (f"__{child}" if child else "")


# Staging lives in real tables of the database file, in a schema of its own, each
# batch committed on its own: DuckDB keeps a transaction's uncommitted rows (and TEMP
# tables) in memory, so staging a whole resource inside the merge transaction made peak
# memory grow with the resource. Only the final merge is one (short) transaction.
STAGING_SCHEMA = "_finance_staging"
# Staging tables (qualified names) of writers running in this process. Another process
# cannot be writing the same file (DuckDB allows one writing process), so any other
# staging table is the leftover of a crashed run and the next writer drops it.
_ACTIVE_STAGING: set[str] = set()
_ACTIVE_LOCK = threading.Lock()
_DDL_ATTEMPTS = 10  # concurrent CREATE SCHEMA IF NOT EXISTS can meet a write-write conflict
# Rows buffered per staging table before one bulk insert. Each insert costs ~1 ms fixed,
# so pages are batched; 50,000 was no faster and held more Arrow memory per writer (the
# four biggest resources of scale 50 at once peaked ~50 MiB higher than with 10,000).
FLUSH_ROWS = 10_000
# Row groups a bulk insert buffers before writing them out, for the merge only (this
# connection's session): DuckDB's default of 5 held 118 MiB while 600,000 invoice line
# items were inserted, 1 held 67 MiB.
_MERGE_SETTINGS = {"write_buffer_row_group_count": 1}


def _staging_table(catalog: str, name: str) -> str:
    """The qualified name of a table of the staging schema."""
    return in_catalog(catalog, f"{q(STAGING_SCHEMA)}.{q(name)}")


def _create_staging_schema(conn: duckdb.DuckDBPyConnection, catalog: str) -> None:
    """``CREATE SCHEMA IF NOT EXISTS`` in its own transaction, retried on a DDL conflict."""
    for attempt in range(_DDL_ATTEMPTS):
        try:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {in_catalog(catalog, q(STAGING_SCHEMA))}")
            return
        except duckdb.TransactionException:  # another writer created it at the same moment
            if attempt == _DDL_ATTEMPTS - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


def _drop_leftover_staging(conn: duckdb.DuckDBPyConnection, catalog: str) -> None:
    """Drop staging tables no writer of this process owns: what a crashed run left behind."""
    rows = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?",
        [catalog, STAGING_SCHEMA],
    ).fetchall()
    tables = [_staging_table(catalog, name) for (name,) in rows]
    with _ACTIVE_LOCK:
        leftovers = [fq for fq in tables if fq not in _ACTIVE_STAGING]
    for fq in leftovers:  # suppress: another writer may be dropping it right now
        with suppress(duckdb.Error):
            conn.execute(f"DROP TABLE IF EXISTS {fq}")


@contextmanager
def _session_settings(conn: duckdb.DuckDBPyConnection, settings: dict[str, int]) -> Iterator[None]:
    """Set DuckDB settings for this connection only, restored afterwards.

    A setting this DuckDB version does not know is skipped (it only bounds memory).
    """
    before: dict[str, Any] = {}
    for name, value in settings.items():
        try:
            (previous,) = conn.execute("SELECT current_setting(?)", [name]).fetchall()[0]
            conn.execute(f"SET SESSION {name} = {int(value)}")
        except duckdb.Error:
            continue
        before[name] = previous
    try:
        yield
    finally:
        for name, previous in before.items():
            with suppress(duckdb.Error):  # never hide the write's own outcome
                conn.execute(f"RESET SESSION {name}")  # follow the global value again ...
                (now,) = conn.execute("SELECT current_setting(?)", [name]).fetchall()[0]
                if now != previous:  # ... unless the session had a value of its own
                    conn.execute(f"SET SESSION {name} = {int(previous)}")


def _drop_staging(conn: duckdb.DuckDBPyConnection, tables: Collection[str], drop: bool) -> None:
    """Release one writer's staging tables; ``drop`` them first (each in autocommit).

    Best effort: the data is committed (or rolled back) by now and must not fail for
    this; a table left behind is a leftover the next writer drops.
    """
    try:
        for fq in tables if drop else ():
            with suppress(duckdb.Error):
                conn.execute(f"DROP TABLE IF EXISTS {fq}")
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE_STAGING.difference_update(tables)


@dataclass(frozen=True)
class _MergeProbe:
    """What the merge learns in one query first: which of its statements cannot change a row.

    A first load has nothing to delete, update or restore, and without a repeated id every
    staged row is its id's winner; skipping those statements leaves results exactly equal.
    """

    distinct_ids: int
    duplicates: bool  # an id arrived more than once: winners are picked by max _seq
    target_rows: bool  # the parent table holds rows (old versions, soft deletes)
    child_rows: dict[str, bool]  # child (endpoint field) -> its table holds rows
    quarantined: bool  # finance._rejected holds rows of this resource
    rejections: bool  # this run staged records for the quarantine


class Writer:
    """Stages one resource's pages, then merges them in one transaction (``Warehouse.writer``)."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        endpoint: Endpoint,
        flush_rows: int = FLUSH_ROWS,
        catalog: str | None = None,
        full_refresh: bool = False,
    ) -> None:
        self._conn = conn
        self._full_refresh = full_refresh
        self._ranges: list[tuple[str, str]] = []
        self._cursor: dt.datetime | None = None
        self._catalog = catalog or current_catalog(conn)
        self._endpoint = endpoint
        # Each INSERT from Arrow costs ~1 ms fixed, so small pages are buffered (bounded).
        self._flush_rows = flush_rows
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered: dict[str, int] = {}
        self._parent = list(model_columns(endpoint.model))
        self._children = {f: list(model_columns(m)) for f, m in endpoint.children.items()}
        self._seq = 0
        self.stats = WriteStats(endpoint.name)
        # Staging tables of this writer (logical stage -> qualified name); the token keeps
        # writers of the same resource on other cursors apart.
        token = uuid.uuid4().hex[:12]
        logical = [_stage_name(endpoint, "_rejected"), _stage_name(endpoint)]
        logical += [_stage_name(endpoint, child) for child in self._children]
        self._staged = {s: _staging_table(self._catalog, f"{s}__{token}") for s in logical}

    def _create_staging(self) -> None:
        """Create this writer's staging tables (autocommit), first dropping crashed leftovers."""
        ep, conn, staged = self._endpoint, self._conn, self._staged
        _create_staging_schema(conn, self._catalog)
        with _ACTIVE_LOCK:
            _ACTIVE_STAGING.update(self._staged.values())
        _drop_leftover_staging(conn, self._catalog)
        ddl = ", ".join(f"{q(s.name)} {s.sql_type}" for s in self._parent)
        tables = {
            staged[_stage_name(ep, "_rejected")]: "id VARCHAR, reason VARCHAR, raw VARCHAR",
            staged[_stage_name(ep)]: f"{_SEQ} BIGINT, {ddl}, {EXTRA_COLUMN} VARCHAR",
        }
        for child, specs in self._children.items():
            ddl = ", ".join(f"{q(s.name)} {s.sql_type}" for s in specs)
            tables[staged[_stage_name(ep, child)]] = (
                f"{_SEQ} BIGINT, {q(PARENT_ID_COLUMN)} VARCHAR, {q(POSITION_COLUMN)} INTEGER, "
                f"{ddl}, {EXTRA_COLUMN} VARCHAR"
            )
        for fq, columns in tables.items():
            conn.execute(f"CREATE TABLE {fq} ({columns})")

    def _append(self, stage: str, columns: dict[str, pa.Array]) -> None:
        page = pa.Table.from_pydict(columns)
        self._buffers.setdefault(stage, []).append(page)
        self._buffered[stage] = self._buffered.get(stage, 0) + page.num_rows
        if self._buffered[stage] >= self._flush_rows:
            self._flush(stage)

    def _flush_all(self) -> None:
        """Stage every page still buffered (before the merge transaction)."""
        for stage in list(self._buffers):
            self._flush(stage)

    def _flush(self, stage: str) -> None:
        """One bulk insert of the buffered pages: DuckDB scans the Arrow table."""
        pages = self._buffers.pop(stage, [])
        self._buffered.pop(stage, None)
        if not pages:
            return
        data = pa.concat_tables(pages)
        view = f"{stage}__page"
        self._conn.register(view, data)
        try:  # outside any transaction: each bulk insert commits on its own (to disk)
            cols = ", ".join(q(c) for c in data.column_names)
            self._conn.execute(
                f"INSERT INTO {self._staged[stage]} ({cols}) SELECT {cols} FROM {view}"
            )
        finally:
            self._conn.unregister(view)

    def add(self, page: PageColumns) -> None:
        """Stage one page of validated records (from either way of reading it)."""
        parent, children = page.parent, page.children
        n = parent.num_rows
        if not n:
            return
        if parent.column("id").null_count:
            raise ValueError(f"{self._endpoint.name}: a record without id cannot be merged")
        seqs = pa.array(range(self._seq, self._seq + n), type=pa.int64())
        columns: dict[str, pa.Array] = {_SEQ: seqs}
        for spec in self._parent:
            columns[spec.name] = parent.column(spec.name)
        columns[EXTRA_COLUMN] = parent.column(EXTRA_COLUMN)
        ready = [(_stage_name(self._endpoint), columns)]
        ids = parent.column("id")
        for child, specs in self._children.items():
            table = children.get(child)
            if table is None or not table.num_rows:
                continue
            rows = table.column(ROW_COLUMN)
            ccols: dict[str, pa.Array] = {
                _SEQ: seqs.take(rows),
                PARENT_ID_COLUMN: ids.take(rows),
                POSITION_COLUMN: table.column(POSITION_COLUMN),
            }
            for spec in specs:
                ccols[spec.name] = table.column(spec.name)
            ccols[EXTRA_COLUMN] = table.column(EXTRA_COLUMN)
            ready.append((_stage_name(self._endpoint, child), ccols))
        self._stage(ready, n)

    def _stage(self, ready: list[tuple[str, dict[str, pa.Array]]], n: int) -> None:
        """Append a page's built tables (all of them, or none was built) and count it."""
        for stage, cols in ready:
            self._append(stage, cols)
        self._seq += n
        self.stats.pages += 1
        self.stats.rows_staged += n

    def seen_range(self, low: str, high: str) -> None:
        """Full refresh: the pass saw every record that existed with ``low <= order key <= high``.

        The caller derives ranges from pages (a page is a contiguous slice of the list
        when served); a record missing inside one is deleted, one between ranges may
        only have been skipped by a shift and is left alone.
        """
        self._ranges.append((low, high))

    def set_cursor(self, cursor: dt.datetime | None) -> None:
        """The cursor to commit with this write (the next incremental read starts there)."""
        self._cursor = cursor

    def reject(self, records: Sequence[RejectedRecord]) -> None:
        """Stage records the schema cannot hold for ``finance._rejected`` (same transaction)."""
        if not records:
            return
        self._append(
            _stage_name(self._endpoint, "_rejected"),
            {
                "id": pa.array([r.record_id for r in records], type=pa.string()),
                "reason": pa.array([r.reason for r in records], type=pa.string()),
                "raw": pa.array([json_text(r.raw) for r in records], type=pa.string()),
            },
        )
        self.stats.rejected += len(records)

    def _merge_rejected(self, loaded_at: dt.datetime, winners: str, probe: _MergeProbe) -> None:
        """Quarantine rows of this resource: a newer rejection or a valid load supersedes one."""
        stage = self._staged[_stage_name(self._endpoint, "_rejected")]
        conn, name = self._conn, self._endpoint.name
        quarantine = in_catalog(self._catalog, REJECTED_TABLE)
        if probe.quarantined:  # else no row of this resource to supersede
            conn.execute(
                f"DELETE FROM {quarantine} WHERE resource = ? AND (id IN (SELECT id FROM {winners})"
                f" OR id IN (SELECT id FROM {stage})"
                f" OR (id IS NULL AND raw::VARCHAR IN (SELECT raw FROM {stage} WHERE id IS NULL)))",
                [name],
            )
        if probe.rejections:
            conn.execute(
                f"INSERT INTO {quarantine} SELECT ?, id, reason, raw, ?::TIMESTAMPTZ "
                f"FROM {stage} "  # the last rejection per id (per payload when id-less) wins
                "QUALIFY row_number() OVER (PARTITION BY coalesce(id, raw) "
                "ORDER BY rowid DESC) = 1",
                [name, loaded_at.isoformat()],
            )

    def _probe(self, target: str) -> _MergeProbe:
        """One query for the facts that let ``_merge`` skip statements (``_MergeProbe``)."""
        ep = self._endpoint
        stage, rejected = self._staged[_stage_name(ep)], self._staged[_stage_name(ep, "_rejected")]
        quarantine = in_catalog(self._catalog, REJECTED_TABLE)
        children = [in_catalog(self._catalog, child_table_name(ep, c)) for c in self._children]
        filled = ", ".join(f"EXISTS (SELECT 1 FROM {t})" for t in (target, *children))
        staged, distinct, rejections, quarantined, target_rows, *child_rows = self._conn.execute(
            f"SELECT (SELECT count(*) FROM {stage}), (SELECT count(DISTINCT id) FROM {stage}), "
            f"EXISTS (SELECT 1 FROM {rejected}), "
            f"EXISTS (SELECT 1 FROM {quarantine} WHERE resource = ?), {filled}",
            [ep.name],
        ).fetchone()  # type: ignore[misc]
        return _MergeProbe(
            distinct_ids=int(distinct),
            duplicates=staged != distinct,  # (NULL ids, refused by add, would land here too)
            target_rows=bool(target_rows),
            child_rows=dict(zip(self._children, map(bool, child_rows), strict=True)),
            quarantined=bool(quarantined),
            rejections=bool(rejections),
        )

    def _merge(self, loaded_at: dt.datetime) -> None:
        """Set-wise upsert: winners per id, delete their old rows and children, insert.

        Every page is staged by now (``Warehouse.writer`` flushes before the transaction).
        Statements the probe shows cannot change a row are skipped (a first load deletes
        nothing; without a repeated id no row needs picking), the others are the general
        ones: tables and stats are exactly those of running them all.
        """
        ep, conn = self._endpoint, self._conn
        target = in_catalog(self._catalog, table_name(ep))
        stage = self._staged[_stage_name(ep)]
        probe = self._probe(target)
        if probe.duplicates:
            win = f"{_stage_name(ep)}__win"
            conn.execute(
                f"CREATE OR REPLACE TEMP TABLE {win} AS "
                f"SELECT id, max({_SEQ}) AS {_SEQ} FROM {stage} GROUP BY id"
            )
            winners_only = f" WHERE {_SEQ} IN (SELECT {_SEQ} FROM {win})"
        else:  # every staged row is its id's winner: staging is the winners table
            win, winners_only = stage, ""
        updated = restored = 0
        if probe.target_rows:
            updated, restored = conn.execute(
                f"SELECT (SELECT count(*) FROM {win} WHERE id IN (SELECT id FROM {target})), "
                f"(SELECT count(*) FROM {target} WHERE {DELETED_AT_COLUMN} IS NOT NULL "
                f"AND id IN (SELECT id FROM {win}))"
            ).fetchone()  # type: ignore[misc]
        self.stats.distinct_ids, self.stats.updated = probe.distinct_ids, int(updated)
        self.stats.inserted = self.stats.distinct_ids - self.stats.updated
        self.stats.restored = int(restored)

        for child in self._children:
            ctable, cstage = child_table_name(ep, child), self._staged[_stage_name(ep, child)]
            cfq = in_catalog(self._catalog, ctable)
            if probe.child_rows[child]:
                conn.execute(
                    f"DELETE FROM {cfq} WHERE {q(PARENT_ID_COLUMN)} IN (SELECT id FROM {win})"
                )
            cols = _cols(child_column_specs(ep.children[child]))
            (rows,) = conn.execute(  # DuckDB returns the inserted row count
                f"INSERT INTO {cfq} ({cols}) SELECT {cols} FROM {cstage}{winners_only}"
            ).fetchone()  # type: ignore[misc]
            self.stats.child_rows[ctable] = int(rows)

        if probe.target_rows:
            conn.execute(f"DELETE FROM {target} WHERE id IN (SELECT id FROM {win})")
        cols = _cols([*self._parent])
        conn.execute(
            f"INSERT INTO {target} ({cols}, {EXTRA_COLUMN}, {LOADED_AT_COLUMN}) "
            f"SELECT {cols}, {EXTRA_COLUMN}, ?::TIMESTAMPTZ FROM {stage}{winners_only}",
            [loaded_at.isoformat()],
        )
        if self._full_refresh and probe.target_rows:  # else every row is a winner: none gone
            self._mark_deleted(target, win, loaded_at)
        self._merge_rejected(loaded_at, win, probe)
        self._save_state(loaded_at)
        if probe.duplicates:
            conn.execute(f"DROP TABLE {win}")  # staging tables: dropped by Warehouse.writer

    def _mark_deleted(self, target: str, win: str, loaded_at: dt.datetime) -> None:
        """Soft-delete live rows the pass proved gone: missing inside a seen key range."""
        if not self._ranges:  # nothing proved gone
            return
        rejected = self._staged[_stage_name(self._endpoint, "_rejected")]
        lows, highs = (list(bounds) for bounds in zip(*self._ranges, strict=True))
        (deleted,) = self._conn.execute(
            f"UPDATE {target} SET {DELETED_AT_COLUMN} = ?::TIMESTAMPTZ "
            f"WHERE {DELETED_AT_COLUMN} IS NULL AND id NOT IN (SELECT id FROM {win}) "
            f"AND id NOT IN (SELECT id FROM {rejected} WHERE id IS NOT NULL) "  # exists, invalid
            # The ranges as two list parameters: one statement, not an INSERT per range.
            "AND EXISTS (SELECT 1 FROM (SELECT unnest(?::VARCHAR[]) AS low, "
            f"unnest(?::VARCHAR[]) AS high) r WHERE {_ORDER_KEY_SQL} BETWEEN r.low AND r.high)",
            [loaded_at.isoformat(), lows, highs],
        ).fetchone()  # type: ignore[misc]
        self.stats.deleted = int(deleted)

    def _save_state(self, loaded_at: dt.datetime) -> None:
        """Replace the resource's bookkeeping row (same transaction as the data)."""
        state, name = in_catalog(self._catalog, SYNC_STATE_TABLE), self._endpoint.name
        previous = self._conn.execute(
            f"DELETE FROM {state} WHERE resource = ? RETURNING last_full_refresh_at", [name]
        ).fetchone()
        last_full = loaded_at if self._full_refresh else (previous[0] if previous else None)
        mode = "full" if self._full_refresh else "incremental"
        self._conn.execute(
            f"INSERT INTO {state} VALUES (?, ?, ?, ?, ?)",
            [name, self._cursor, mode, loaded_at, last_full],
        )


# ---------- warehouse ----------
class Warehouse:
    """The ``finance`` schema in one DuckDB connection (the caller owns the connection)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn
        self.catalog = current_catalog(conn)

    def _fq(self, table: str) -> str:
        return in_catalog(self.catalog, table)

    def ensure_tables(self, endpoint: Endpoint) -> None:
        """Create the schema, the parent table and its child tables if missing (idempotent)."""
        self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {in_catalog(self.catalog, SCHEMA)}")
        tables = {table_name(endpoint): column_specs(endpoint.model)}
        for child, item_model in endpoint.children.items():
            tables[child_table_name(endpoint, child)] = child_column_specs(item_model)
        for table, specs in tables.items():
            ddl = ", ".join(f"{q(s.name)} {s.sql_type}" for s in specs)
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self._fq(table)} ({ddl})")
        bookkeeping = ((REJECTED_TABLE, _REJECTED_COLUMNS), (SYNC_STATE_TABLE, _SYNC_STATE_COLUMNS))
        for table, columns in bookkeeping:
            ddl = ", ".join(f"{q(c)} {t}" for c, t in columns)
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self._fq(table)} ({ddl})")
        self._verify_columns(tables)

    def _verify_columns(self, tables: dict[str, list[ColumnSpec]]) -> None:
        # No schema evolution yet: fail loudly, before loading, if a table drifted.
        for table, specs in tables.items():
            schema, name = table.split(".")
            rows = self.conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE "
                "table_catalog = ? AND table_schema = ? AND table_name = ? "
                "ORDER BY ordinal_position",
                [self.catalog, schema, name],
            ).fetchall()
            expected = [(s.name, _INFO_SCHEMA_TYPE.get(s.sql_type, s.sql_type)) for s in specs]
            if rows != expected:
                raise RuntimeError(
                    f"{table} does not match the model (schema evolution is not supported): "
                    f"expected {expected}, found {rows}"
                )

    @contextmanager
    def writer(
        self,
        endpoint: Endpoint,
        loaded_at: dt.datetime,
        flush_rows: int = FLUSH_ROWS,
        full_refresh: bool = False,
    ) -> Iterator[Writer]:
        """One transaction for one resource: stage pages with ``add``, merge and commit on exit.

        Pages are staged in this writer's own tables of the ``_finance_staging`` schema,
        each bulk insert committed on its own, so memory stays bounded; the merge into
        the resource's tables, the quarantine and the sync state is one transaction.
        On an exception nothing is written (tables exactly as before) and it re-raises;
        the staging tables are dropped either way (a crashed run's by the next writer).
        ``flush_rows`` bounds the Arrow rows buffered in Python between staging inserts.
        """
        if loaded_at.tzinfo is None:
            raise ValueError("loaded_at must be timezone-aware")
        self.conn.begin()  # the tables match the model: fail before any page is fetched
        try:
            self.ensure_tables(endpoint)
        finally:
            self.conn.rollback()  # nothing is created before the merge transaction
        w = Writer(self.conn, endpoint, flush_rows, self.catalog, full_refresh)
        try:
            w._create_staging()
            yield w
            w._flush_all()  # the last pages, still outside the transaction
            with _session_settings(self.conn, _MERGE_SETTINGS):
                self.conn.begin()
                try:
                    self.ensure_tables(endpoint)
                    w._merge(loaded_at)
                    # Dropped in this transaction, so a checkpoint the commit triggers does
                    # not write staged rows to the file (a first load's commits: -25%).
                    for fq in w._staged.values():
                        self.conn.execute(f"DROP TABLE {fq}")
                    self.conn.commit()
                except BaseException:
                    self.conn.rollback()
                    raise
            w.stats.committed = True
        finally:  # committed: the merge transaction dropped them already
            _drop_staging(self.conn, list(w._staged.values()), drop=not w.stats.committed)

    def sync_state(self, endpoint: Endpoint) -> SyncState | None:
        """The resource's committed cursor and mode; None before its first sync."""
        if SYNC_STATE_TABLE not in self.existing_tables():
            return None
        row = self.conn.execute(
            "SELECT cursor, mode, synced_at, last_full_refresh_at "
            f"FROM {self._fq(SYNC_STATE_TABLE)} WHERE resource = ?",
            [endpoint.name],
        ).fetchone()
        return SyncState(*row) if row else None

    def existing_tables(self) -> set[str]:
        """Qualified names of the tables in the ``finance`` schema."""
        rows = self.conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = ? AND table_schema = ?",
            [self.catalog, SCHEMA],
        ).fetchall()
        return {f"{SCHEMA}.{r[0]}" for r in rows}

    def row_estimates(self) -> dict[str, int]:
        """Rows per table of the ``finance`` schema from DuckDB's catalog (no table scan)."""
        rows = self.conn.execute(
            "SELECT table_name, estimated_size FROM duckdb_tables() "
            "WHERE database_name = ? AND schema_name = ?",
            [self.catalog, SCHEMA],
        ).fetchall()
        return {f"{SCHEMA}.{name}": int(size or 0) for name, size in rows}

    def row_count(self, endpoint: Endpoint) -> int:
        """Rows in the parent table (0 when it does not exist)."""
        if table_name(endpoint) not in self.existing_tables():
            return 0
        row = self.conn.execute(f"SELECT count(*) FROM {self._fq(table_name(endpoint))}").fetchone()
        assert row is not None
        return int(row[0])

    def summary(self, endpoint: Endpoint) -> ResourceSummary:
        """Row counts of the parent and child tables in one query (None for absent tables)."""
        present = self.existing_tables()
        names = table_names(endpoint)
        counted = [t for t in names if t in present]
        counts: dict[str, int | None] = dict.fromkeys(names)
        if counted:
            row = self.conn.execute(
                "SELECT " + ", ".join(f"(SELECT count(*) FROM {self._fq(t)})" for t in counted)
            ).fetchone()
            assert row is not None
            counts.update(zip(counted, (int(v) for v in row), strict=True))
        parent = names[0]
        return ResourceSummary(parent, counts[parent], {t: counts[t] for t in names[1:]})


def summary_rows(
    conn: duckdb.DuckDBPyConnection, endpoints: Sequence[Endpoint]
) -> list[tuple[str, int]]:
    """(table, rows) for every parent and child table, then the quarantine; 0 when absent."""
    wh = Warehouse(conn)
    out: list[tuple[str, int]] = []
    for endpoint in endpoints:
        s = wh.summary(endpoint)
        out.append((s.table, s.rows or 0))
        out += [(t, n or 0) for t, n in s.child_rows.items()]
    if REJECTED_TABLE in wh.existing_tables():
        row = conn.execute(f"SELECT count(*) FROM {wh._fq(REJECTED_TABLE)}").fetchone()
        assert row is not None
        out.append((REJECTED_TABLE, int(row[0])))
    return out
