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
import enum
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from types import TracebackType
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


# ---------- DDL ----------
def _table_statements(catalog: str, endpoint: Endpoint) -> list[str]:
    """``CREATE ... IF NOT EXISTS`` for the schema, the resource's tables and the bookkeeping."""
    statements = [f"CREATE SCHEMA IF NOT EXISTS {in_catalog(catalog, SCHEMA)}"]
    for table, specs in _resource_columns(endpoint).items():
        ddl = ", ".join(f"{q(s.name)} {s.sql_type}" for s in specs)
        statements.append(f"CREATE TABLE IF NOT EXISTS {in_catalog(catalog, table)} ({ddl})")
    bookkeeping = ((REJECTED_TABLE, _REJECTED_COLUMNS), (SYNC_STATE_TABLE, _SYNC_STATE_COLUMNS))
    for table, columns in bookkeeping:
        ddl = ", ".join(f"{q(c)} {t}" for c, t in columns)
        statements.append(f"CREATE TABLE IF NOT EXISTS {in_catalog(catalog, table)} ({ddl})")
    return statements


def _resource_columns(endpoint: Endpoint) -> dict[str, list[ColumnSpec]]:
    """The resource's tables (parent, then children) and their columns."""
    tables = {table_name(endpoint): column_specs(endpoint.model)}
    for child, item_model in endpoint.children.items():
        tables[child_table_name(endpoint, child)] = child_column_specs(item_model)
    return tables


def _check_tables_match(conn: duckdb.DuckDBPyConnection, catalog: str, endpoint: Endpoint) -> None:
    """Fail loudly, before loading, if a table drifted from its model (no schema evolution)."""
    for table, specs in _resource_columns(endpoint).items():
        schema, name = table.split(".")
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_catalog = ? AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [catalog, schema, name],
        ).fetchall()
        expected = [(s.name, _INFO_SCHEMA_TYPE.get(s.sql_type, s.sql_type)) for s in specs]
        if rows != expected:
            raise RuntimeError(
                f"{table} does not match the model (schema evolution is not supported): "
                f"expected {expected}, found {rows}"
            )


def _ensure_tables(conn: duckdb.DuckDBPyConnection, catalog: str, endpoint: Endpoint) -> None:
    for statement in _table_statements(catalog, endpoint):
        conn.execute(statement)
    _check_tables_match(conn, catalog, endpoint)


# ---------- staging ----------
# Staging lives in real tables of the database file, in a schema of its own, each
# batch committed on its own: DuckDB keeps a transaction's uncommitted rows (and TEMP
# tables) in memory, so staging a whole resource inside the merge transaction made peak
# memory grow with the resource. Only the final merge is one (short) transaction.
STAGING_SCHEMA = "_finance_staging"
_DDL_ATTEMPTS = 10  # concurrent CREATE SCHEMA IF NOT EXISTS can meet a write-write conflict
# Rows buffered per staging table before one bulk insert. Each insert costs ~1 ms fixed,
# so pages are batched; 50,000 was no faster and held more Arrow memory per writer (the
# four biggest resources of scale 50 at once peaked ~50 MiB higher than with 10,000).
FLUSH_ROWS = 10_000


@dataclass(frozen=True)
class StagingTable:
    """A table of the staging schema."""

    name: str
    qualified: str  # catalog, schema and name, quoted for SQL


class StagingTables:
    """One writer's staging tables: parent records, each nested array, rejected records.

    A random token in the names keeps writers of the same resource (on other cursors) apart.
    """

    def __init__(self, catalog: str, endpoint: Endpoint) -> None:
        token = uuid.uuid4().hex[:12]

        def table(*parts: str) -> StagingTable:
            name = "__".join(["_stage", endpoint.name, *parts, token])
            return StagingTable(name, _in_staging_schema(catalog, name))

        self._catalog = catalog
        self.rejected = table("_rejected")  # no child field starts with "_"
        self.parent = table()
        self.children = {child: table(child) for child in endpoint.children}

    def all(self) -> list[StagingTable]:
        return [self.rejected, self.parent, *self.children.values()]

    def create(self, conn: duckdb.DuckDBPyConnection, endpoint: Endpoint) -> None:
        """Create the schema (if missing) and these tables, each statement in autocommit."""
        _create_staging_schema(conn, self._catalog)
        columns = {
            self.rejected: "id VARCHAR, reason VARCHAR, raw VARCHAR",
            self.parent: ", ".join(
                [
                    f"{ARRIVAL_COLUMN} BIGINT",
                    *(f"{q(s.name)} {s.sql_type}" for s in model_columns(endpoint.model)),
                    f"{EXTRA_COLUMN} VARCHAR",
                ]
            ),
        }
        for child, stage in self.children.items():
            columns[stage] = ", ".join(
                [
                    f"{ARRIVAL_COLUMN} BIGINT",
                    f"{q(PARENT_ID_COLUMN)} VARCHAR",
                    f"{q(POSITION_COLUMN)} INTEGER",
                    *(f"{q(s.name)} {s.sql_type}" for s in model_columns(endpoint.children[child])),
                    f"{EXTRA_COLUMN} VARCHAR",
                ]
            )
        for stage, ddl in columns.items():
            conn.execute(f"CREATE TABLE {stage.qualified} ({ddl})")

    def drop(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Drop these tables (each in autocommit) if they exist.

        Best effort: the data is committed (or rolled back) by now and must not fail for
        this; a table left behind is a leftover the next run drops.
        """
        for stage in self.all():
            with suppress(duckdb.Error):
                conn.execute(f"DROP TABLE IF EXISTS {stage.qualified}")


# Staging only: the order in which the run received its parent records, so that the last
# occurrence of an id wins the merge.
ARRIVAL_COLUMN = "_arrival"


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


def _drop_all_staging(conn: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """Drop every table of the staging schema; how many there were."""
    rows = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?",
        [catalog, STAGING_SCHEMA],
    ).fetchall()
    for (name,) in rows:
        conn.execute(f"DROP TABLE IF EXISTS {_in_staging_schema(catalog, name)}")
    return len(rows)


def _in_staging_schema(catalog: str, name: str) -> str:
    """A table of the staging schema, qualified and quoted for SQL."""
    return in_catalog(catalog, f"{q(STAGING_SCHEMA)}.{q(name)}")


# ---------- the merge ----------
# Row groups a bulk insert buffers before writing them out, for the merge only (this
# connection's session): DuckDB's default of 5 held 118 MiB while 600,000 invoice line
# items were inserted, 1 held 67 MiB.
_MERGE_SETTINGS = {"write_buffer_row_group_count": 1}


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


class MergeStep(enum.Enum):
    """The statements of the merge transaction, in the order they run (COMMIT last)."""

    CREATE_TABLES = "create the tables if missing"
    CHECK_TABLES = "check the tables match the models"
    PROBE = "probe which statements can change a row"
    PICK_WINNERS = "pick each id's last occurrence"
    COUNT_CHANGES = "count updated and restored rows"
    DELETE_REPLACED_CHILDREN = "delete the child rows being replaced"
    INSERT_CHILDREN = "insert the child rows"
    DELETE_REPLACED_ROWS = "delete the rows being replaced"
    INSERT_ROWS = "insert the rows"
    MARK_DELETED = "mark rows proven gone as deleted"
    CLEAR_QUARANTINE = "remove superseded quarantine rows"
    QUARANTINE = "quarantine rejected records"
    SAVE_SYNC_STATE = "save the sync state"
    DROP_WINNERS = "drop the winners table"
    DROP_STAGING = "drop the staging tables"
    COMMIT = "commit"


# Called with each step just before its statement runs inside the merge transaction: a
# seam for tests, which fail the merge at any statement or look at the transaction there.
MergeHook = Callable[[MergeStep], None]


@dataclass(frozen=True)
class MergeProbe:
    """What the merge learns in its first query: which of its statements cannot change a row.

    A first load has nothing to delete, update or restore, and without a repeated id every
    staged record is its id's winner; skipping those statements leaves the results equal.
    """

    distinct_ids: int
    repeated_ids: bool  # an id arrived more than once: winners are picked by arrival
    table_has_rows: bool  # the parent table holds rows (old versions, soft deletes)
    child_tables_have_rows: dict[str, bool]  # child field -> its table holds rows
    quarantine_has_rows: bool  # finance._rejected holds rows of this resource
    rejections_staged: bool  # this run staged records for the quarantine

    def without_shortcuts(self) -> MergeProbe:
        """The general path: every statement is assumed to change rows."""
        return replace(
            self,
            repeated_ids=True,
            table_has_rows=True,
            child_tables_have_rows=dict.fromkeys(self.child_tables_have_rows, True),
            quarantine_has_rows=True,
            rejections_staged=True,
        )


@dataclass(frozen=True)
class MergeOutcome:
    """What the committed merge changed."""

    distinct_ids: int
    inserted: int
    updated: int
    restored: int
    deleted: int
    child_rows: dict[str, int]  # child table -> rows inserted


class Merge:
    """The one transaction that moves a writer's staging tables into the resource's tables.

    Upsert by primary key (the last occurrence in the run wins and its child rows replace
    the old ones), quarantine, soft deletes proven by seen key ranges and the cursor; the
    staging tables are dropped inside it too, so a checkpoint the commit triggers does not
    write staged rows to the file. On any exception it rolls back and re-raises.
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        catalog: str,
        endpoint: Endpoint,
        staging: StagingTables,
        *,
        loaded_at: dt.datetime,
        full_refresh: bool,
        seen_ranges: Sequence[tuple[str, str]],
        cursor: dt.datetime | None,
        before_statement: MergeHook | None = None,
        shortcuts: bool = True,
    ) -> None:
        self._conn, self._catalog, self._endpoint = conn, catalog, endpoint
        self._staging = staging
        self._loaded_at, self._full_refresh = loaded_at, full_refresh
        self._seen_ranges, self._cursor = list(seen_ranges), cursor
        self._before_statement = before_statement
        self._shortcuts = shortcuts
        self._target = in_catalog(catalog, table_name(endpoint))
        self._key = q(endpoint.primary_key)

    def run(self) -> MergeOutcome:
        """Run the merge in one transaction and commit; roll back on any exception."""
        with _session_settings(self._conn, _MERGE_SETTINGS):
            self._conn.begin()
            try:
                outcome = self._merge()
                self._step(MergeStep.COMMIT)
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
        return outcome

    def _step(self, step: MergeStep) -> None:
        if self._before_statement is not None:
            self._before_statement(step)

    def _execute(
        self, step: MergeStep, sql: str, parameters: list[Any] | None = None
    ) -> duckdb.DuckDBPyConnection:
        self._step(step)
        return self._conn.execute(sql, parameters)

    def _merge(self) -> MergeOutcome:
        """Statements the probe shows cannot change a row are skipped (a first load deletes
        nothing; without a repeated id no row needs picking), the others are the general
        ones: tables and counts are exactly those of running them all."""
        conn, ep, key, target = self._conn, self._endpoint, self._key, self._target
        for statement in _table_statements(self._catalog, ep):
            self._execute(MergeStep.CREATE_TABLES, statement)
        self._step(MergeStep.CHECK_TABLES)
        _check_tables_match(conn, self._catalog, ep)
        probe = self._probe()
        if not self._shortcuts:
            probe = probe.without_shortcuts()
        staged = self._staging.parent.qualified
        if probe.repeated_ids:
            winners = f"{self._staging.parent.name}__winners"
            self._execute(
                MergeStep.PICK_WINNERS,
                f"CREATE OR REPLACE TEMP TABLE {winners} AS SELECT {key}, "
                f"max({ARRIVAL_COLUMN}) AS {ARRIVAL_COLUMN} FROM {staged} GROUP BY {key}",
            )
            winners_only = f" WHERE {ARRIVAL_COLUMN} IN (SELECT {ARRIVAL_COLUMN} FROM {winners})"
        else:  # every staged record is its id's winner: staging is the winners table
            winners, winners_only = staged, ""
        updated = restored = 0
        if probe.table_has_rows:
            updated, restored = self._execute(
                MergeStep.COUNT_CHANGES,
                f"SELECT (SELECT count(*) FROM {winners} WHERE {key} IN (SELECT {key} FROM "
                f"{target})), (SELECT count(*) FROM {target} WHERE {DELETED_AT_COLUMN} IS NOT "
                f"NULL AND {key} IN (SELECT {key} FROM {winners}))",
            ).fetchone()  # type: ignore[misc]

        child_rows: dict[str, int] = {}
        for child, stage in self._staging.children.items():
            table = child_table_name(ep, child)
            qualified = in_catalog(self._catalog, table)
            if probe.child_tables_have_rows[child]:
                self._execute(
                    MergeStep.DELETE_REPLACED_CHILDREN,
                    f"DELETE FROM {qualified} "
                    f"WHERE {q(PARENT_ID_COLUMN)} IN (SELECT {key} FROM {winners})",
                )
            columns = _cols(child_column_specs(ep.children[child]))
            (rows,) = self._execute(  # DuckDB returns the inserted row count
                MergeStep.INSERT_CHILDREN,
                f"INSERT INTO {qualified} ({columns}) "
                f"SELECT {columns} FROM {stage.qualified}{winners_only}",
            ).fetchone()  # type: ignore[misc]
            child_rows[table] = int(rows)

        if probe.table_has_rows:
            self._execute(
                MergeStep.DELETE_REPLACED_ROWS,
                f"DELETE FROM {target} WHERE {key} IN (SELECT {key} FROM {winners})",
            )
        columns = _cols(model_columns(ep.model))
        self._execute(
            MergeStep.INSERT_ROWS,
            f"INSERT INTO {target} ({columns}, {EXTRA_COLUMN}, {LOADED_AT_COLUMN}) "
            f"SELECT {columns}, {EXTRA_COLUMN}, ?::TIMESTAMPTZ FROM {staged}{winners_only}",
            [self._loaded_at.isoformat()],
        )
        deleted = 0
        if self._full_refresh and probe.table_has_rows:  # else every row is a winner
            deleted = self._mark_deleted(winners)
        self._merge_quarantine(winners, probe)
        self._save_sync_state()
        if probe.repeated_ids:
            self._execute(MergeStep.DROP_WINNERS, f"DROP TABLE {winners}")
        for stage in self._staging.all():
            self._execute(MergeStep.DROP_STAGING, f"DROP TABLE {stage.qualified}")
        return MergeOutcome(
            distinct_ids=probe.distinct_ids,
            inserted=probe.distinct_ids - int(updated),
            updated=int(updated),
            restored=int(restored),
            deleted=deleted,
            child_rows=child_rows,
        )

    def _probe(self) -> MergeProbe:
        """One query for the facts that let the merge skip statements (``MergeProbe``)."""
        ep, staging = self._endpoint, self._staging
        quarantine = in_catalog(self._catalog, REJECTED_TABLE)
        children = [in_catalog(self._catalog, child_table_name(ep, c)) for c in ep.children]
        filled = ", ".join(f"EXISTS (SELECT 1 FROM {t})" for t in (self._target, *children))
        staged, distinct, rejections, quarantined, table_rows, *child_rows = self._execute(
            MergeStep.PROBE,
            f"SELECT (SELECT count(*) FROM {staging.parent.qualified}), "
            f"(SELECT count(DISTINCT {self._key}) FROM {staging.parent.qualified}), "
            f"EXISTS (SELECT 1 FROM {staging.rejected.qualified}), "
            f"EXISTS (SELECT 1 FROM {quarantine} WHERE resource = ?), {filled}",
            [ep.name],
        ).fetchone()  # type: ignore[misc]
        return MergeProbe(
            distinct_ids=int(distinct),
            repeated_ids=staged != distinct,  # (NULL ids, refused by add, would land here too)
            table_has_rows=bool(table_rows),
            child_tables_have_rows=dict(zip(ep.children, map(bool, child_rows), strict=True)),
            quarantine_has_rows=bool(quarantined),
            rejections_staged=bool(rejections),
        )

    def _mark_deleted(self, winners: str) -> int:
        """Soft-delete live rows the pass proved gone: missing inside a seen key range."""
        if not self._seen_ranges:  # nothing proved gone
            return 0
        key, rejected = self._key, self._staging.rejected.qualified
        lows, highs = (list(bounds) for bounds in zip(*self._seen_ranges, strict=True))
        (deleted,) = self._execute(
            MergeStep.MARK_DELETED,
            f"UPDATE {self._target} SET {DELETED_AT_COLUMN} = ?::TIMESTAMPTZ "
            f"WHERE {DELETED_AT_COLUMN} IS NULL AND {key} NOT IN (SELECT {key} FROM {winners}) "
            # A record staged as rejected exists (it is only invalid).
            f"AND {key} NOT IN (SELECT id FROM {rejected} WHERE id IS NOT NULL) "
            # The ranges as two list parameters: one statement, not an INSERT per range.
            "AND EXISTS (SELECT 1 FROM (SELECT unnest(?::VARCHAR[]) AS low, "
            f"unnest(?::VARCHAR[]) AS high) r WHERE {_ORDER_KEY_SQL} BETWEEN r.low AND r.high)",
            [self._loaded_at.isoformat(), lows, highs],
        ).fetchone()  # type: ignore[misc]
        return int(deleted)

    def _merge_quarantine(self, winners: str, probe: MergeProbe) -> None:
        """A newer rejection or a valid load of a record supersedes its quarantine row."""
        rejected, name = self._staging.rejected.qualified, self._endpoint.name
        quarantine = in_catalog(self._catalog, REJECTED_TABLE)
        if probe.quarantine_has_rows:  # else no row of this resource to supersede
            self._execute(
                MergeStep.CLEAR_QUARANTINE,
                f"DELETE FROM {quarantine} WHERE resource = ? AND ("
                f"id IN (SELECT {self._key} FROM {winners}) OR id IN (SELECT id FROM {rejected})"
                f" OR (id IS NULL AND raw::VARCHAR IN (SELECT raw FROM {rejected} "
                "WHERE id IS NULL)))",
                [name],
            )
        if probe.rejections_staged:
            self._execute(
                MergeStep.QUARANTINE,
                f"INSERT INTO {quarantine} SELECT ?, id, reason, raw, ?::TIMESTAMPTZ "
                f"FROM {rejected} "  # the last rejection per id (per payload when id-less) wins
                "QUALIFY row_number() OVER (PARTITION BY coalesce(id, raw) "
                "ORDER BY rowid DESC) = 1",
                [name, self._loaded_at.isoformat()],
            )

    def _save_sync_state(self) -> None:
        """Replace the resource's bookkeeping row (same transaction as the data)."""
        state, name = in_catalog(self._catalog, SYNC_STATE_TABLE), self._endpoint.name
        previous = self._execute(
            MergeStep.SAVE_SYNC_STATE,
            f"DELETE FROM {state} WHERE resource = ? RETURNING last_full_refresh_at",
            [name],
        ).fetchone()
        last_full = self._loaded_at if self._full_refresh else (previous[0] if previous else None)
        mode = "full" if self._full_refresh else "incremental"
        self._execute(
            MergeStep.SAVE_SYNC_STATE,
            f"INSERT INTO {state} VALUES (?, ?, ?, ?, ?)",
            [name, self._cursor, mode, self._loaded_at, last_full],
        )


# ---------- writer ----------
class Writer:
    """One resource written in one transaction, as a context manager over its whole life.

    On enter the resource's tables are checked against the models and the writer's
    staging tables are created; ``add`` and ``reject`` stage pages, in batches committed
    on their own so memory stays bounded; a clean exit stages the last batch and merges
    everything in one transaction (``Merge``); an exception leaves every table as it was
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
        catalog: str | None = None,
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
        self._catalog = catalog or current_catalog(conn)
        self._before_merge_statement = before_merge_statement
        self._merge_shortcuts = merge_shortcuts
        self._staging = StagingTables(self._catalog, endpoint)
        self._seen_ranges: list[tuple[str, str]] = []
        self._cursor: dt.datetime | None = None
        self._buffers: dict[StagingTable, list[pa.Table]] = {}
        self._buffered: dict[StagingTable, int] = {}
        self._parent = list(model_columns(endpoint.model))
        self._children = {f: list(model_columns(m)) for f, m in endpoint.children.items()}
        self._arrivals = 0
        self.stats = WriteStats(endpoint.name)

    def __enter__(self) -> Writer:
        self._conn.begin()  # the tables match the models: fail before any page is fetched
        try:
            _ensure_tables(self._conn, self._catalog, self._endpoint)
        finally:
            self._conn.rollback()  # nothing is created before the merge transaction
        try:
            self._staging.create(self._conn, self._endpoint)
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
                outcome = Merge(
                    self._conn,
                    self._catalog,
                    self._endpoint,
                    self._staging,
                    loaded_at=self._loaded_at,
                    full_refresh=self._full_refresh,
                    seen_ranges=self._seen_ranges,
                    cursor=self._cursor,
                    before_statement=self._before_merge_statement,
                    shortcuts=self._merge_shortcuts,
                ).run()
                self._record(outcome)
        finally:
            if not self.stats.committed:  # else the merge transaction dropped them
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
            cols = ", ".join(q(c) for c in data.column_names)
            self._conn.execute(f"INSERT INTO {stage.qualified} ({cols}) SELECT {cols} FROM {view}")
        finally:
            self._conn.unregister(view)


# ---------- warehouse ----------
class Warehouse:
    """The ``finance`` schema in one DuckDB connection (the caller owns the connection)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn
        self.catalog = current_catalog(conn)

    def _fq(self, table: str) -> str:
        return in_catalog(self.catalog, table)

    def drop_leftover_staging(self) -> int:
        """Drop what crashed runs left in the staging schema; how many tables there were.

        Call it once when a run opens the file for writing, before any writer starts:
        DuckDB lets one process write a file, so every staging table there then is a
        leftover. Writers never drop each other's tables, so writers of one run can
        start and end in any order.
        """
        return _drop_all_staging(self.conn, self.catalog)

    def ensure_tables(self, endpoint: Endpoint) -> None:
        """Create the schema, the parent table and its child tables if missing (idempotent)."""
        _ensure_tables(self.conn, self.catalog, endpoint)

    def writer(
        self,
        endpoint: Endpoint,
        loaded_at: dt.datetime,
        flush_rows: int = FLUSH_ROWS,
        full_refresh: bool = False,
    ) -> Writer:
        """A ``Writer`` of one resource on this connection: use it in a ``with`` block.

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
