"""Staging tables: where a writer's pages wait, committed batch by batch, for the merge.

Staging lives in real tables, in a schema of its own of the writer's connection (a
run's own file, ``run_file.py``, or the warehouse itself), each batch committed on its
own: DuckDB keeps a transaction's uncommitted rows (and TEMP tables) in memory, so
staging a whole resource inside the merge transaction would make peak memory grow with
the resource. Only the merge is one (short) transaction.
"""

from __future__ import annotations

import time
import uuid
from contextlib import suppress
from dataclasses import dataclass

import duckdb

from finance_assets.endpoints import Endpoint
from finance_assets.schema import (
    EXTRA_COLUMN,
    PARENT_ID_COLUMN,
    POSITION_COLUMN,
    in_catalog,
    model_columns,
    quoted,
)

STAGING_SCHEMA = "_finance_staging"
# Staging only: the order in which a run received its parent records, so that the last
# occurrence of an id wins the merge.
ARRIVAL_COLUMN = "_arrival"
_DDL_ATTEMPTS = 10  # concurrent CREATE SCHEMA IF NOT EXISTS can meet a write-write conflict


@dataclass(frozen=True)
class StagingTable:
    """A table of the staging schema."""

    name: str
    qualified: str  # catalog, schema and name, quoted for SQL


def _in_staging_schema(catalog: str, name: str) -> str:
    return in_catalog(catalog, f"{quoted(STAGING_SCHEMA)}.{quoted(name)}")


class StagingTables:
    """One writer's staging tables: parent records, each nested array, rejected records.

    A random token in the names keeps writers of the same resource (on other cursors) apart.
    """

    def __init__(self, catalog: str, endpoint: Endpoint) -> None:
        token = uuid.uuid4().hex[:12]

        def table(*parts: str) -> StagingTable:
            name = "__".join(["_stage", endpoint.name, *parts, token])
            return StagingTable(name, _in_staging_schema(catalog, name))

        self.catalog = catalog  # the database they live in
        self._endpoint = endpoint
        self.rejected = table("_rejected")  # no child field starts with "_"
        self.parent = table()
        self.children = {child: table(child) for child in endpoint.children}

    def all(self) -> list[StagingTable]:
        return [self.rejected, self.parent, *self.children.values()]

    def create(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Create the schema (if missing) and these tables, each statement in autocommit."""
        _create_staging_schema(conn, self.catalog)
        endpoint = self._endpoint
        columns = {
            self.rejected: "id VARCHAR, reason VARCHAR, raw VARCHAR",
            self.parent: ", ".join(
                [
                    f"{ARRIVAL_COLUMN} BIGINT",
                    *(f"{quoted(s.name)} {s.sql_type}" for s in model_columns(endpoint.model)),
                    f"{EXTRA_COLUMN} VARCHAR",
                ]
            ),
        }
        for child, stage in self.children.items():
            item_columns = model_columns(endpoint.children[child])
            columns[stage] = ", ".join(
                [
                    f"{ARRIVAL_COLUMN} BIGINT",
                    f"{quoted(PARENT_ID_COLUMN)} VARCHAR",
                    f"{quoted(POSITION_COLUMN)} INTEGER",
                    *(f"{quoted(s.name)} {s.sql_type}" for s in item_columns),
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


def _create_staging_schema(conn: duckdb.DuckDBPyConnection, catalog: str) -> None:
    """``CREATE SCHEMA IF NOT EXISTS`` in its own transaction, retried on a DDL conflict."""
    for attempt in range(_DDL_ATTEMPTS):
        try:
            schema = in_catalog(catalog, quoted(STAGING_SCHEMA))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            return
        except duckdb.TransactionException:  # another writer created it at the same moment
            if attempt == _DDL_ATTEMPTS - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


def drop_all_staging(conn: duckdb.DuckDBPyConnection, catalog: str) -> int:
    """Drop every table of the staging schema; how many there were."""
    rows = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?",
        [catalog, STAGING_SCHEMA],
    ).fetchall()
    for (name,) in rows:
        conn.execute(f"DROP TABLE IF EXISTS {_in_staging_schema(catalog, name)}")
    return len(rows)
