"""The merge: one transaction that moves a writer's staging tables into the resource's tables.

Set-wise upsert by primary key (the last occurrence in the run wins and its child rows
replace the old ones), the quarantine, soft deletes proven by seen key ranges and the
sync state, then COMMIT, so readers see a resource change in one step. A probe first
finds the statements that cannot change a row (a first load deletes nothing; without a
repeated id no row needs picking) and skips them: the tables and counts are exactly
those of running them all.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any

import duckdb

from finance_assets.endpoints import Endpoint
from finance_assets.schema import (
    DELETED_AT_COLUMN,
    EXTRA_COLUMN,
    LOADED_AT_COLUMN,
    ORGANIZATION_COLUMN,
    PARENT_ID_COLUMN,
    REJECTED_TABLE,
    SYNC_STATE_TABLE,
    ColumnSpec,
    child_column_specs,
    child_table_name,
    in_catalog,
    model_columns,
    quoted,
    table_name,
    table_names,
)
from finance_assets.warehouse.list_order import ORDER_KEY_SQL
from finance_assets.warehouse.staging import ARRIVAL_COLUMN, StagingTables
from finance_assets.warehouse.tables import (
    FULL_REFRESH,
    INCREMENTAL,
    ORGANIZATION,
    check_tables_match,
    create_statements,
)

# Row groups a bulk insert buffers before writing them out, for the merge's session only:
# fewer than DuckDB's default keeps the memory of inserting a large child table bounded.
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

    Every statement touches only ``organization``'s rows: records merge on (organization,
    id), and a full refresh marks deletions within its own organization. Staging tables
    in the same file are dropped inside the transaction too, so a checkpoint the commit
    triggers does not write staged rows to the file (staging in a run's own file is the
    writer's to drop: one transaction writes one file). On any exception it rolls back
    and re-raises.
    ``before_statement`` is called with each step just before its statement runs;
    ``shortcuts=False`` runs every statement, even those the probe shows cannot change
    a row (the results are the same).
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
        organization: str,
        before_statement: MergeHook | None = None,
        shortcuts: bool = True,
    ) -> None:
        self._conn, self._catalog, self._endpoint = conn, catalog, endpoint
        self._organization = organization
        self._mine = f"{quoted(ORGANIZATION_COLUMN)} = ?"  # this organization's rows
        self._staging = staging
        self._loaded_at, self._full_refresh = loaded_at, full_refresh
        self._seen_ranges, self._cursor = list(seen_ranges), cursor
        self._before_statement = before_statement
        self._shortcuts = shortcuts
        self._table = in_catalog(catalog, table_name(endpoint))
        self._key = quoted(endpoint.primary_key)

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
        for statement in create_statements(self._catalog, self._endpoint):
            self._execute(MergeStep.CREATE_TABLES, statement)
        self._step(MergeStep.CHECK_TABLES)
        check_tables_match(self._conn, self._catalog, self._endpoint)
        probe = self._probe()
        if not self._shortcuts:
            probe = probe.without_shortcuts()
        winners, only_winners = self._pick_winners(probe)
        updated, restored = self._count_changes(probe, winners)
        child_rows = self._replace_children(probe, winners, only_winners)
        self._replace_rows(probe, winners, only_winners)
        deleted = 0
        if self._full_refresh and probe.table_has_rows:  # else every row is a winner
            deleted = self._mark_deleted(winners)
        self._update_quarantine(probe, winners)
        self._save_sync_state()
        if probe.repeated_ids:
            self._execute(MergeStep.DROP_WINNERS, f"DROP TABLE {winners}")
        if self._staging.catalog == self._catalog:
            for stage in self._staging.all():
                self._execute(MergeStep.DROP_STAGING, f"DROP TABLE {stage.qualified}")
        return MergeOutcome(
            distinct_ids=probe.distinct_ids,
            inserted=probe.distinct_ids - updated,
            updated=updated,
            restored=restored,
            deleted=deleted,
            child_rows=child_rows,
        )

    def _probe(self) -> MergeProbe:
        """One query for the facts that let the merge skip statements (``MergeProbe``)."""
        endpoint, staged = self._endpoint, self._staging.parent.qualified
        quarantine = in_catalog(self._catalog, REJECTED_TABLE)
        tables = table_names(endpoint)
        filled = ", ".join(  # the parent table, then each child table
            f"EXISTS (SELECT 1 FROM {in_catalog(self._catalog, t)} WHERE {self._mine})"
            for t in tables
        )
        rows, distinct, rejections, quarantined, table_rows, *child_rows = self._execute(
            MergeStep.PROBE,
            f"SELECT (SELECT count(*) FROM {staged}), "
            f"(SELECT count(DISTINCT {self._key}) FROM {staged}), "
            f"EXISTS (SELECT 1 FROM {self._staging.rejected.qualified}), "
            f"EXISTS (SELECT 1 FROM {quarantine} WHERE resource = ? AND {ORGANIZATION} = ?), "
            f"{filled}",
            [endpoint.name, self._organization, *[self._organization] * len(tables)],
        ).fetchone()  # type: ignore[misc]
        return MergeProbe(
            distinct_ids=int(distinct),
            repeated_ids=rows != distinct,  # (NULL ids, refused by add, would land here too)
            table_has_rows=bool(table_rows),
            child_tables_have_rows=dict(zip(endpoint.children, map(bool, child_rows), strict=True)),
            quarantine_has_rows=bool(quarantined),
            rejections_staged=bool(rejections),
        )

    def _pick_winners(self, probe: MergeProbe) -> tuple[str, str]:
        """The table of each id's last occurrence, and the filter that keeps a staging
        table's rows of those occurrences (none needed when no id repeats)."""
        staged = self._staging.parent.qualified
        if not probe.repeated_ids:  # every staged record is its id's winner
            return staged, ""
        winners = f"{self._staging.parent.name}__winners"
        self._execute(
            MergeStep.PICK_WINNERS,
            f"CREATE OR REPLACE TEMP TABLE {winners} AS SELECT {self._key}, "
            f"max({ARRIVAL_COLUMN}) AS {ARRIVAL_COLUMN} FROM {staged} GROUP BY {self._key}",
        )
        return winners, f" WHERE {ARRIVAL_COLUMN} IN (SELECT {ARRIVAL_COLUMN} FROM {winners})"

    def _count_changes(self, probe: MergeProbe, winners: str) -> tuple[int, int]:
        """Winners that replace a stored row, and stored rows marked deleted they restore."""
        if not probe.table_has_rows:
            return 0, 0
        key, table, mine = self._key, self._table, self._mine
        updated, restored = self._execute(
            MergeStep.COUNT_CHANGES,
            f"SELECT (SELECT count(*) FROM {winners} "
            f"WHERE {key} IN (SELECT {key} FROM {table} WHERE {mine})),"
            f" (SELECT count(*) FROM {table} WHERE {mine} AND {DELETED_AT_COLUMN} IS NOT NULL "
            f"AND {key} IN (SELECT {key} FROM {winners}))",
            [self._organization, self._organization],
        ).fetchone()  # type: ignore[misc]
        return int(updated), int(restored)

    def _replace_children(
        self, probe: MergeProbe, winners: str, only_winners: str
    ) -> dict[str, int]:
        """Each winner's child rows replace all its stored ones; rows inserted per table."""
        inserted: dict[str, int] = {}
        for child, stage in self._staging.children.items():
            table = child_table_name(self._endpoint, child)
            qualified = in_catalog(self._catalog, table)
            if probe.child_tables_have_rows[child]:
                self._execute(
                    MergeStep.DELETE_REPLACED_CHILDREN,
                    f"DELETE FROM {qualified} WHERE {self._mine} "
                    f"AND {quoted(PARENT_ID_COLUMN)} IN (SELECT {self._key} FROM {winners})",
                    [self._organization],
                )
            columns = _column_list(  # the organization is this merge's, not staged
                s
                for s in child_column_specs(self._endpoint.children[child])
                if s.name != ORGANIZATION_COLUMN
            )
            (rows,) = self._execute(  # DuckDB returns the inserted row count
                MergeStep.INSERT_CHILDREN,
                f"INSERT INTO {qualified} ({columns}, {quoted(ORGANIZATION_COLUMN)}) "
                f"SELECT {columns}, ? FROM {stage.qualified}{only_winners}",
                [self._organization],
            ).fetchone()  # type: ignore[misc]
            inserted[table] = int(rows)
        return inserted

    def _replace_rows(self, probe: MergeProbe, winners: str, only_winners: str) -> None:
        """Each winner replaces its stored row (unmarking it if it was marked deleted)."""
        if probe.table_has_rows:
            self._execute(
                MergeStep.DELETE_REPLACED_ROWS,
                f"DELETE FROM {self._table} WHERE {self._mine} "
                f"AND {self._key} IN (SELECT {self._key} FROM {winners})",
                [self._organization],
            )
        columns = _column_list(model_columns(self._endpoint.model))
        self._execute(
            MergeStep.INSERT_ROWS,
            f"INSERT INTO {self._table} ({columns}, {EXTRA_COLUMN}, {LOADED_AT_COLUMN}, "
            f"{quoted(ORGANIZATION_COLUMN)}) SELECT {columns}, {EXTRA_COLUMN}, ?::TIMESTAMPTZ, ? "
            f"FROM {self._staging.parent.qualified}{only_winners}",
            [self._loaded_at.isoformat(), self._organization],
        )

    def _mark_deleted(self, winners: str) -> int:
        """Soft-delete live rows the pass proved gone: missing inside a seen key range."""
        if not self._seen_ranges:  # nothing proved gone
            return 0
        key, rejected = self._key, self._staging.rejected.qualified
        lows, highs = (list(bounds) for bounds in zip(*self._seen_ranges, strict=True))
        (deleted,) = self._execute(
            MergeStep.MARK_DELETED,
            f"UPDATE {self._table} SET {DELETED_AT_COLUMN} = ?::TIMESTAMPTZ "
            f"WHERE {self._mine} AND {DELETED_AT_COLUMN} IS NULL "
            f"AND {key} NOT IN (SELECT {key} FROM {winners}) "
            # A record staged as rejected exists (it is only invalid).
            f"AND {key} NOT IN (SELECT id FROM {rejected} WHERE id IS NOT NULL) "
            # The ranges as two list parameters: one statement, not an INSERT per range.
            "AND EXISTS (SELECT 1 FROM (SELECT unnest(?::VARCHAR[]) AS low, "
            f"unnest(?::VARCHAR[]) AS high) r WHERE {ORDER_KEY_SQL} BETWEEN r.low AND r.high)",
            [self._loaded_at.isoformat(), self._organization, lows, highs],
        ).fetchone()  # type: ignore[misc]
        return int(deleted)

    def _update_quarantine(self, probe: MergeProbe, winners: str) -> None:
        """A newer rejection or a valid load of a record supersedes its quarantine row."""
        rejected, name = self._staging.rejected.qualified, self._endpoint.name
        quarantine = in_catalog(self._catalog, REJECTED_TABLE)
        if probe.quarantine_has_rows:  # else no row of this resource to supersede
            self._execute(
                MergeStep.CLEAR_QUARANTINE,
                f"DELETE FROM {quarantine} WHERE resource = ? AND {ORGANIZATION} = ? AND ("
                f"id IN (SELECT {self._key} FROM {winners}) OR id IN (SELECT id FROM {rejected})"
                f" OR (id IS NULL AND raw::VARCHAR IN (SELECT raw FROM {rejected} "
                "WHERE id IS NULL)))",
                [name, self._organization],
            )
        if probe.rejections_staged:
            self._execute(
                MergeStep.QUARANTINE,
                f"INSERT INTO {quarantine} SELECT ?, id, reason, raw, ?::TIMESTAMPTZ, ? "
                f"FROM {rejected} "  # the last rejection per id (per payload when id-less) wins
                "QUALIFY row_number() OVER (PARTITION BY coalesce(id, raw) "
                "ORDER BY rowid DESC) = 1",
                [name, self._loaded_at.isoformat(), self._organization],
            )

    def _save_sync_state(self) -> None:
        """Replace the organization's row of the resource's sync state (same transaction
        as the data)."""
        state, name = in_catalog(self._catalog, SYNC_STATE_TABLE), self._endpoint.name
        previous = self._execute(
            MergeStep.SAVE_SYNC_STATE,
            f"DELETE FROM {state} WHERE resource = ? AND {ORGANIZATION} = ? "
            "RETURNING last_full_refresh_at",
            [name, self._organization],
        ).fetchone()
        last_full = self._loaded_at if self._full_refresh else (previous[0] if previous else None)
        mode = FULL_REFRESH if self._full_refresh else INCREMENTAL
        self._execute(
            MergeStep.SAVE_SYNC_STATE,
            f"INSERT INTO {state} VALUES (?, ?, ?, ?, ?, ?)",
            [name, self._cursor, mode, self._loaded_at, last_full, self._organization],
        )


def _column_list(specs: Iterable[ColumnSpec]) -> str:
    return ", ".join(quoted(s.name) for s in specs)
