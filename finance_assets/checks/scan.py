"""The queries behind the checks: one scan per table feeds every check of that table.

A table's scan counts its rows, the NULLs of each non-nullable column and the health
of its key (and a child table's orphans) in one round trip; the exact key GROUP BY and
the NULL samples run only when the scan shows a problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb

from finance_assets.endpoints import Endpoint
from finance_assets.schema import (
    EXTRA_COLUMN,
    LOADED_AT_COLUMN,
    ORGANIZATION_COLUMN,
    PARENT_ID_COLUMN,
    POSITION_COLUMN,
    REJECTED_TABLE,
    SCHEMA,
    ColumnSpec,
    child_column_specs,
    child_table_name,
    current_catalog,
    in_catalog,
    model_columns,
    quoted,
    table_name,
)

SAMPLE_SIZE = 5
# Hash of a key for the cheap uniqueness test; any collision only costs the exact count.
KEY_HASH = "hash({})"


@dataclass(frozen=True)
class Catalog:
    """A snapshot of the warehouse catalog: what the checks may query, read in one go."""

    database: str  # the warehouse's database, for ``in_catalog``
    columns: Mapping[str, frozenset[str]]  # ``finance.<table>`` -> its column names
    organization: str | None = None  # the checks see only its rows (None: every row)

    def rows_of(self, table: str) -> str:
        """SQL for the table's rows the checks see: the organization's, or all."""
        qualified = in_catalog(self.database, table)
        if self.organization is None:
            return qualified
        mine = f"{quoted(ORGANIZATION_COLUMN)} = '{self.organization}'"  # a checked key
        return f"(SELECT * FROM {qualified} WHERE {mine})"


def read_catalog(
    conn: duckdb.DuckDBPyConnection, database: str | None = None, organization: str | None = None
) -> Catalog:
    """Every ``finance`` table's columns in ``database`` (default: the connection's), in
    one query; the checks then look at ``organization``'s rows only (None: all rows).

    ``duckdb_columns()`` is cheaper than ``information_schema.columns`` (a view over
    the same catalog: tables and views). A caller that runs no DDL between assets
    can read it once per run and pass it to ``run_checks``.
    """
    rows = conn.execute(
        "SELECT database_name, table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = coalesce(?, current_database()) AND schema_name = ?",
        [database, SCHEMA],
    ).fetchall()
    if not rows:  # no table yet; the name is still needed
        return Catalog(database or current_catalog(conn), {}, organization)
    out: dict[str, set[str]] = {}
    for _, table, column in rows:
        out.setdefault(f"{SCHEMA}.{table}", set()).add(column)
    return Catalog(str(rows[0][0]), {t: frozenset(c) for t, c in out.items()}, organization)


@dataclass(frozen=True)
class CheckedTable:
    """A table the checks read: its model columns and its key."""

    name: str
    specs: list[ColumnSpec]
    key: list[str]  # ``id`` of a parent; (``parent_id``, ``position``) of a child
    is_child: bool

    @property
    def sample(self) -> str:
        """SQL expression that identifies a row in samples: the id, or a child's key."""
        if self.is_child:
            return "{" + ", ".join(f"'{c}': {quoted(c)}" for c in self.key) + "}"
        return quoted(self.key[0])

    @property
    def required(self) -> list[str]:
        """Columns the model documents as non-nullable."""
        return [s.name for s in self.specs if not s.nullable]


def tables_to_check(endpoint: Endpoint) -> list[CheckedTable]:
    """The resource's parent table, then its child tables."""
    out = [
        CheckedTable(
            table_name(endpoint), list(model_columns(endpoint.model)), [endpoint.primary_key], False
        )
    ]
    for child, item_model in endpoint.children.items():
        specs = [s for s in child_column_specs(item_model) if s.from_model]
        key = [PARENT_ID_COLUMN, POSITION_COLUMN]
        out.append(CheckedTable(child_table_name(endpoint, child), specs, key, True))
    return out


@dataclass
class TableScan:
    """What one query learnt about one existing table, for all three checks."""

    rows: int
    missing: list[str]  # non-nullable columns absent from the table
    nulls: list[tuple[str, int]]  # (non-nullable column, NULL count) in column order
    keys: dict[str, Any]  # the key stats of that table (see ``_key_stats``)
    with_undocumented_fields: int = 0  # rows whose ``_extra`` is not NULL


def scan_table(
    conn: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    table: CheckedTable,
    columns: frozenset[str],
    parent: CheckedTable | None = None,
) -> TableScan:
    """Rows, NULLs per non-nullable column, key health (and orphans) in one query.

    ``count(col)`` (non-NULL values) is cheaper than ``count(*) FILTER (WHERE col IS
    NULL)``, and ``count(DISTINCT hash(key))`` than a GROUP BY on the key: equal keys
    hash equally, so as many distinct hashes as rows, with no NULL key part, proves the
    key unique. Otherwise (a NULL, a duplicate, or a hash collision) ``_key_stats``
    counts exactly. A child table's orphans (``parent_id`` not in ``parent``) are
    counted by an anti join.
    """
    qualified = catalog.rows_of(table.name)
    present = [c for c in table.required if c in columns]
    counted = list(dict.fromkeys([*table.key, *present]))
    if EXTRA_COLUMN in columns:  # rows with undocumented fields: most tables have none
        counted.append(EXTRA_COLUMN)
    hashed = KEY_HASH.format(", ".join(quoted(c) for c in table.key))
    aggregates = ", ".join(
        ["count(*)", f"count(DISTINCT {hashed})", *(f"count({quoted(c)})" for c in counted)]
    )
    orphans = ""
    if parent is not None:
        parent_qualified, parent_key = catalog.rows_of(parent.name), quoted(parent.key[0])
        orphans = (
            f", (SELECT count(*), min({table.sample}, {SAMPLE_SIZE}) FROM {qualified} c "
            f"ANTI JOIN {parent_qualified} p ON c.{quoted(PARENT_ID_COLUMN)} = p.{parent_key})"
        )
    row = conn.execute(f"SELECT * FROM (SELECT {aggregates} FROM {qualified}){orphans}").fetchone()
    assert row is not None
    rows, distinct_keys = int(row[0]), int(row[1])
    non_null = dict(zip(counted, (int(n) for n in row[2 : 2 + len(counted)]), strict=True))
    orphan = row[2 + len(counted) :]
    if distinct_keys == rows and all(non_null[c] == rows for c in table.key):
        keys: dict[str, Any] = {
            "table": table.name,
            "rows": rows,
            "null_keys": 0,
            "duplicate_keys": 0,
            "duplicate_extra_rows": 0,
            "sample_duplicates": [],
        }
    else:
        keys = _key_stats(conn, qualified, table)
    if orphan:
        keys["orphan_rows"], keys["sample_orphans"] = int(orphan[0]), list(orphan[1] or [])
    return TableScan(
        rows=rows,
        missing=[c for c in table.required if c not in columns],
        nulls=[(c, rows - non_null[c]) for c in present],
        keys=keys,
        with_undocumented_fields=non_null.get(EXTRA_COLUMN, 0),
    )


def _key_stats(
    conn: duckdb.DuckDBPyConnection, qualified: str, table: CheckedTable
) -> dict[str, Any]:
    """Rows, rows with a NULL key part, duplicated keys (count, extra rows, samples).

    The exact GROUP BY, run only when ``scan_table``'s cheap test cannot rule problems out.
    """
    columns = ", ".join(quoted(c) for c in table.key)
    any_null = " OR ".join(f"{quoted(c)} IS NULL" for c in table.key)
    row = conn.execute(
        f"""
        WITH dup AS (
            SELECT {columns}, count(*) AS n FROM {qualified}
            WHERE NOT ({any_null}) GROUP BY ALL HAVING count(*) > 1
        )
        SELECT (SELECT count(*) FROM {qualified}),
               (SELECT count(*) FROM {qualified} WHERE {any_null}),
               count(*), coalesce(sum(n - 1), 0), min({table.sample}, {SAMPLE_SIZE})
        FROM dup
        """
    ).fetchone()
    assert row is not None
    rows, nulls, duplicate_keys, extra_rows, samples = row
    return {
        "table": table.name,
        "rows": int(rows),
        "null_keys": int(nulls),
        "duplicate_keys": int(duplicate_keys),
        "duplicate_extra_rows": int(extra_rows),
        "sample_duplicates": list(samples or []),
    }


def null_samples(
    conn: duckdb.DuckDBPyConnection, catalog: Catalog, table: CheckedTable, columns: list[str]
) -> list[list[Any]]:
    """The smallest row identifiers with a NULL, per column, in one query (failures only)."""
    samples = ", ".join(
        f"min({table.sample}, {SAMPLE_SIZE}) FILTER (WHERE {quoted(c)} IS NULL)" for c in columns
    )
    row = conn.execute(f"SELECT {samples} FROM {catalog.rows_of(table.name)}").fetchone()
    assert row is not None
    return [list(sample or []) for sample in row]


def quarantined(
    conn: duckdb.DuckDBPyConnection, catalog: Catalog, endpoint: Endpoint
) -> tuple[int, list[tuple[str | None, str]]]:
    """The resource's quarantined records: how many, and the first few (id, reason).

    One query: the window count is taken before ORDER BY/LIMIT cut the samples.
    """
    if REJECTED_TABLE not in catalog.columns:
        return 0, []
    mine = "" if catalog.organization is None else " AND organization = ?"
    rows = conn.execute(
        f"SELECT id, reason, count(*) OVER () "
        f"FROM {in_catalog(catalog.database, REJECTED_TABLE)} WHERE resource = ?{mine} "
        f"ORDER BY id NULLS LAST LIMIT {SAMPLE_SIZE}",
        [endpoint.name, *([catalog.organization] if mine else [])],
    ).fetchall()
    count = int(rows[0][2]) if rows else 0
    return count, [(i, r) for i, r, _ in rows]


@dataclass(frozen=True)
class UndocumentedField:
    """A key the API sent beyond the contract, as ``_extra`` holds it in one table."""

    table: str
    field: str
    records: int  # rows of the table that carry it
    first_seen: Any  # the earliest load time among those rows


def undocumented_fields(
    conn: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    endpoint: Endpoint,
    scans: Mapping[str, TableScan],
) -> list[UndocumentedField]:
    """Every undocumented key in the resource's tables: one query per table whose scan
    found rows with any (none for the others).

    Load times live on the parent rows; a child row's is its parent's.
    """
    parent = catalog.rows_of(table_name(endpoint))
    key = quoted(endpoint.primary_key)
    out: list[UndocumentedField] = []
    for table in tables_to_check(endpoint):
        scan = scans.get(table.name)
        if scan is None or not scan.with_undocumented_fields:
            continue
        source = catalog.rows_of(table.name)
        rows = (
            f"SELECT c.{EXTRA_COLUMN} AS extra, p.{LOADED_AT_COLUMN} AS loaded_at "
            f"FROM {source} c JOIN {parent} p ON c.{quoted(PARENT_ID_COLUMN)} = p.{key}"
            if table.is_child
            else f"SELECT {EXTRA_COLUMN} AS extra, {LOADED_AT_COLUMN} AS loaded_at FROM {parent}"
        )
        found = conn.execute(
            f"WITH held AS ({rows}), keyed AS (SELECT unnest(json_keys(extra)) AS field, "
            "loaded_at FROM held WHERE extra IS NOT NULL) "
            "SELECT field, count(*), min(loaded_at) FROM keyed GROUP BY field ORDER BY field"
        ).fetchall()
        out += [UndocumentedField(table.name, f, int(n), first) for f, n, first in found]
    return out
