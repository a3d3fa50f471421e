"""Asset checks over the warehouse: nullability, primary keys and quarantine, per resource.

The first two read nullability and keys from the models (via ``schema``), so one
generic mechanism covers every endpoint; the third makes records the schema could
not hold (kept in ``finance._rejected``) fail loudly instead of hiding. Tables that
do not exist yet are reported as such instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import duckdb

from finance_assets.endpoints import Endpoint
from finance_assets.schema import (
    PARENT_ID_COLUMN,
    POSITION_COLUMN,
    REJECTED_TABLE,
    SCHEMA,
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

NULLABILITY = "nullability"
PRIMARY_KEY = "primary_key"
QUARANTINE = "quarantine"
SAMPLE_SIZE = 5
# Hash of a key for the cheap uniqueness test; any collision only costs the exact count.
KEY_HASH = "hash({})"

CoercibleAssetKey = dg.AssetKey | str | Sequence[str]


# ---------- metadata for definitions ----------
def column_schema(endpoint: Endpoint) -> dg.TableSchema:
    """Parent table columns for ``dagster/column_schema``; non-nullable fields constrained."""
    columns = []
    for spec in column_specs(endpoint.model):
        constraints = None
        if spec.name == endpoint.primary_key:
            constraints = dg.TableColumnConstraints(nullable=False, unique=True)
        elif not spec.nullable:
            constraints = dg.TableColumnConstraints(nullable=False)
        columns.append(dg.TableColumn(spec.name, spec.sql_type, spec.description, constraints))
    return dg.TableSchema(columns=columns)


def check_specs(endpoint: Endpoint, asset_key: CoercibleAssetKey) -> list[dg.AssetCheckSpec]:
    """The three checks every resource asset declares."""
    key = dg.AssetKey.from_coercible(asset_key)
    tables = ", ".join(table_names(endpoint))
    return [
        dg.AssetCheckSpec(
            NULLABILITY,
            asset=key,
            description=(
                f"No NULL in any field the API documents as non-nullable, in {tables}. "
                "Such records are loaded as they came so this check can name them."
            ),
        ),
        dg.AssetCheckSpec(
            PRIMARY_KEY,
            asset=key,
            description=(
                f"`{endpoint.primary_key}` is never NULL and unique in {table_name(endpoint)}; "
                "child tables have unique (parent_id, position) and no orphan rows."
            ),
        ),
        dg.AssetCheckSpec(
            QUARANTINE,
            asset=key,
            description=(
                f"No record of `{endpoint.name}` is quarantined in {REJECTED_TABLE}: every "
                "record the API sent fit the schema (wrong types, unparseable dates and "
                "non-numeric amounts land there with their reason)."
            ),
        ),
    ]


# ---------- catalog ----------
@dataclass(frozen=True)
class Catalog:
    """A snapshot of the warehouse catalog: what the checks may query, read in one go."""

    database: str  # the connection's database, for ``in_catalog``
    columns: Mapping[str, frozenset[str]]  # ``finance.<table>`` -> its column names


def read_catalog(conn: duckdb.DuckDBPyConnection) -> Catalog:
    """Database name and every ``finance`` table's columns, in one query.

    ``duckdb_columns()`` is cheaper than ``information_schema.columns`` (a view over
    the same catalog: tables and views). A caller that runs no DDL between assets
    can read it once per run and pass it to :func:`run_checks`.
    """
    rows = conn.execute(
        "SELECT current_database(), table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = ?",
        [SCHEMA],
    ).fetchall()
    if not rows:  # no table yet; the name is still needed
        return Catalog(current_catalog(conn), {})
    out: dict[str, set[str]] = {}
    for _, table, column in rows:
        out.setdefault(f"{SCHEMA}.{table}", set()).add(column)
    return Catalog(str(rows[0][0]), {t: frozenset(c) for t, c in out.items()})


# ---------- helpers ----------
@dataclass(frozen=True)
class _Table:
    name: str
    specs: list[ColumnSpec]
    is_child: bool

    @property
    def sample(self) -> str:
        """SQL expression that identifies a row for samples."""
        if self.is_child:
            return f"{{'parent_id': {q(PARENT_ID_COLUMN)}, 'position': {q(POSITION_COLUMN)}}}"
        return q("id")

    @property
    def required(self) -> list[str]:
        """Columns the model documents as non-nullable."""
        return [s.name for s in self.specs if not s.nullable]


def _plan(endpoint: Endpoint) -> list[_Table]:
    out = [_Table(table_name(endpoint), list(model_columns(endpoint.model)), False)]
    for child, item_model in endpoint.children.items():
        specs = [s for s in child_column_specs(item_model) if s.from_model]
        out.append(_Table(child_table_name(endpoint, child), specs, True))
    return out


@dataclass
class _Scan:
    """What one query learnt about one existing table, for all three checks."""

    rows: int
    missing: list[str]  # non-nullable columns absent from the table
    nulls: list[tuple[str, int]]  # (non-nullable column, NULL count) in column order
    keys: dict[str, Any]  # the primary-key stats of that table (see ``_scan``)


def _key_stats(
    conn: duckdb.DuckDBPyConnection, fq: str, name: str, key: list[str], sample: str
) -> dict[str, Any]:
    """Rows, rows with a NULL key part, duplicated keys (count, extra rows, samples).

    The exact GROUP BY, run only when ``_scan``'s cheap test cannot rule problems out.
    """
    cols = ", ".join(q(c) for c in key)
    any_null = " OR ".join(f"{q(c)} IS NULL" for c in key)
    row = conn.execute(
        f"""
        WITH dup AS (
            SELECT {cols}, count(*) AS n FROM {fq}
            WHERE NOT ({any_null}) GROUP BY ALL HAVING count(*) > 1
        )
        SELECT (SELECT count(*) FROM {fq}),
               (SELECT count(*) FROM {fq} WHERE {any_null}),
               count(*), coalesce(sum(n - 1), 0), min({sample}, {SAMPLE_SIZE})
        FROM dup
        """
    ).fetchone()
    assert row is not None
    rows, nulls, dup_keys, extra_rows, samples = row
    return {
        "table": name,
        "rows": int(rows),
        "null_keys": int(nulls),
        "duplicate_keys": int(dup_keys),
        "duplicate_extra_rows": int(extra_rows),
        "sample_duplicates": list(samples or []),
    }


def _scan(
    conn: duckdb.DuckDBPyConnection,
    database: str,
    t: _Table,
    columns: frozenset[str],
    key: list[str],
    key_sample: str,
    parent: tuple[str, str] | None = None,
) -> _Scan:
    """Rows, NULLs per non-nullable column, key health (and orphans) in one query.

    One round trip per table instead of one per check. ``count(col)`` (non-NULL
    values) is several times cheaper than ``count(*) FILTER (WHERE col IS NULL)``,
    and ``count(DISTINCT hash(key))`` than a GROUP BY on the key: equal keys hash
    equally, so as many distinct hashes as rows, with no NULL key part, proves the
    key unique. Otherwise (a NULL, a duplicate, or a hash collision) ``_key_stats``
    counts exactly. ``parent`` is (parent table, its key) for a child table, whose
    orphans (``parent_id`` not in the parent) an anti join counts.
    """
    fq = in_catalog(database, t.name)
    present = [c for c in t.required if c in columns]
    counted = list(dict.fromkeys([*key, *present]))
    hashed = KEY_HASH.format(", ".join(q(c) for c in key))
    aggregates = ", ".join(
        ["count(*)", f"count(DISTINCT {hashed})", *(f"count({q(c)})" for c in counted)]
    )
    orphans = ""
    if parent is not None:
        parent_fq, parent_key = in_catalog(database, parent[0]), q(parent[1])
        orphans = (
            f", (SELECT count(*), min({t.sample}, {SAMPLE_SIZE}) FROM {fq} c ANTI JOIN "
            f"{parent_fq} p ON c.{q(PARENT_ID_COLUMN)} = p.{parent_key})"
        )
    row = conn.execute(f"SELECT * FROM (SELECT {aggregates} FROM {fq}){orphans}").fetchone()
    assert row is not None
    rows, distinct_keys = int(row[0]), int(row[1])
    non_null = dict(zip(counted, (int(n) for n in row[2 : 2 + len(counted)]), strict=True))
    orphan = row[2 + len(counted) :]
    if distinct_keys == rows and all(non_null[c] == rows for c in key):
        keys: dict[str, Any] = {
            "table": t.name,
            "rows": rows,
            "null_keys": 0,
            "duplicate_keys": 0,
            "duplicate_extra_rows": 0,
            "sample_duplicates": [],
        }
    else:
        keys = _key_stats(conn, fq, t.name, key, key_sample)
    if orphan:
        keys["orphan_rows"], keys["sample_orphans"] = int(orphan[0]), list(orphan[1] or [])
    return _Scan(
        rows=rows,
        missing=[c for c in t.required if c not in columns],
        nulls=[(c, rows - non_null[c]) for c in present],
        keys=keys,
    )


def _absent(endpoint: Endpoint, key: dg.AssetKey, check: str) -> dg.AssetCheckResult:
    table = table_name(endpoint)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=check,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{table} does not exist: the asset has not been materialized yet.",
        metadata={"table": dg.MetadataValue.text(table), "table_exists": False},
    )


def _result(
    key: dg.AssetKey, name: str, passed: bool, description: str, metadata: dict[str, Any]
) -> dg.AssetCheckResult:
    """A check's verdict; a failure is an ERROR (the data is wrong, not just late)."""
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def _md_table(header: list[str], rows: list[list[Any]]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _fmt_samples(samples: list[Any]) -> str:
    """``id`` or ``parent_id#position``, comma-separated, for the markdown summary."""
    return ", ".join(
        f"`{x['parent_id']}#{x['position']}`" if isinstance(x, dict) else f"`{x}`" for x in samples
    )


# ---------- nullability ----------
def _nullability(
    conn: duckdb.DuckDBPyConnection,
    key: dg.AssetKey,
    database: str,
    plan: list[_Table],
    scans: dict[str, _Scan],
) -> dg.AssetCheckResult:
    """NULLs of every non-nullable column (counted by ``_scan``); sample offending rows."""

    failures: list[dict[str, Any]] = []
    rows_per_table: dict[str, int | None] = {}
    checked = 0
    for t in plan:
        checked += len(t.required)
        scan = scans.get(t.name)
        if scan is None:
            rows_per_table[t.name] = None
            failures.append({"table": t.name, "column": "*", "problem": "table missing"})
            continue
        failures += [
            {"table": t.name, "column": c, "problem": "column missing"} for c in scan.missing
        ]
        rows_per_table[t.name] = scan.rows
        failing = [(c, n) for c, n in scan.nulls if n]
        if not failing:
            continue
        # Second scan only on failure: a few smallest row keys per failing column.
        samples = ", ".join(
            f"min({t.sample}, {SAMPLE_SIZE}) FILTER (WHERE {q(c)} IS NULL)" for c, _ in failing
        )
        fq = in_catalog(database, t.name)
        sample_row = conn.execute(f"SELECT {samples} FROM {fq}").fetchone()
        assert sample_row is not None
        for (column, n), sample in zip(failing, sample_row, strict=True):
            failures.append(
                {
                    "table": t.name,
                    "column": column,
                    "null_count": n,
                    "sample_parent_rows" if t.is_child else "sample_ids": list(sample or []),
                }
            )

    total = sum(f.get("null_count", 0) for f in failures)
    metadata: dict[str, Any] = {
        "columns_checked": dg.MetadataValue.int(checked),
        "null_values": dg.MetadataValue.int(total),
        "rows_checked": dg.MetadataValue.json(rows_per_table),
    }
    if not failures:
        return _result(
            key, NULLABILITY, True, f"No NULL in {checked} non-nullable columns.", metadata
        )
    metadata["failures"] = dg.MetadataValue.json(failures)
    metadata["summary"] = _md_table(
        ["table", "column", "nulls / problem", "samples"],
        [
            [
                f["table"],
                f["column"],
                f.get("null_count", f.get("problem")),
                _fmt_samples(f.get("sample_ids") or f.get("sample_parent_rows") or []),
            ]
            for f in failures
        ],
    )
    cols = ", ".join(f"{f['table']}.{f['column']}" for f in failures)
    return _result(
        key, NULLABILITY, False, f"{total} NULL(s) in non-nullable columns: {cols}.", metadata
    )


# ---------- primary key ----------
def _primary_key(
    endpoint: Endpoint, key: dg.AssetKey, plan: list[_Table], scans: dict[str, _Scan]
) -> dg.AssetCheckResult:
    """``id`` non-null and unique; child (parent_id, position) unique and pointing at a parent."""
    pk = endpoint.primary_key
    stats = [scans[plan[0].name].keys]
    for t in plan[1:]:
        scan = scans.get(t.name)
        stats.append(scan.keys if scan else {"table": t.name, "problem": "table missing"})

    def bad(s: dict[str, Any]) -> bool:
        return bool(
            s.get("problem") or s["null_keys"] or s["duplicate_keys"] or s.get("orphan_rows", 0)
        )

    failing = [s for s in stats if bad(s)]
    p = stats[0]
    metadata: dict[str, Any] = {
        "rows": dg.MetadataValue.int(p["rows"]),
        "null_ids": dg.MetadataValue.int(p["null_keys"]),
        "duplicate_ids": dg.MetadataValue.int(p["duplicate_keys"]),
        "sample_duplicate_ids": dg.MetadataValue.json(p["sample_duplicates"]),
        "tables": dg.MetadataValue.json(stats),
    }
    if not failing:
        return _result(
            key,
            PRIMARY_KEY,
            True,
            f"`{pk}` unique and non-null over {p['rows']} rows; child keys intact.",
            metadata,
        )
    problems = []
    for s in failing:
        if s.get("problem"):
            problems.append(f"{s['table']}: {s['problem']}")
            continue
        parts = [
            f"{s['null_keys']} NULL key(s)" if s["null_keys"] else "",
            f"{s['duplicate_keys']} duplicated key(s)" if s["duplicate_keys"] else "",
            f"{s['orphan_rows']} orphan row(s)" if s.get("orphan_rows") else "",
        ]
        problems.append(f"{s['table']}: " + ", ".join(x for x in parts if x))
    return _result(key, PRIMARY_KEY, False, "; ".join(problems) + ".", metadata)


# ---------- quarantine ----------
def _quarantine(
    conn: duckdb.DuckDBPyConnection, endpoint: Endpoint, key: dg.AssetKey, catalog: Catalog
) -> dg.AssetCheckResult:
    """Fail (ERROR) while ``finance._rejected`` holds rows of this resource; name count and why.

    One query: the window count is taken before ORDER BY/LIMIT cut the samples.
    """
    count, samples = 0, []
    if REJECTED_TABLE in catalog.columns:
        rows = conn.execute(
            f"SELECT id, reason, count(*) OVER () "
            f"FROM {in_catalog(catalog.database, REJECTED_TABLE)} WHERE resource = ? "
            f"ORDER BY id NULLS LAST LIMIT {SAMPLE_SIZE}",
            [endpoint.name],
        ).fetchall()
        count = int(rows[0][2]) if rows else 0
        samples = [(i, r) for i, r, _ in rows]
    metadata: dict[str, Any] = {
        "quarantined": dg.MetadataValue.int(count),
        "table": dg.MetadataValue.text(REJECTED_TABLE),
    }
    if count == 0:
        return _result(
            key, QUARANTINE, True, f"No {endpoint.name} record in {REJECTED_TABLE}.", metadata
        )
    metadata["sample_ids"] = dg.MetadataValue.json([i for i, _ in samples])
    metadata["sample_reasons"] = dg.MetadataValue.json([r for _, r in samples])
    metadata["summary"] = _md_table(["id", "reason"], [[i, r] for i, r in samples])
    return _result(
        key,
        QUARANTINE,
        False,
        (
            f"{count} {endpoint.name} record(s) the schema cannot hold are quarantined in "
            f"{REJECTED_TABLE} (see sample reasons); fix them at the source, the next "
            "load of a fixed record clears its row."
        ),
        metadata,
    )


# the check names, in the order of ``check_specs``
CHECKS = (NULLABILITY, PRIMARY_KEY, QUARANTINE)


def run_checks(
    conn: duckdb.DuckDBPyConnection,
    endpoint: Endpoint,
    asset_key: CoercibleAssetKey,
    *,
    catalog: Catalog | None = None,
) -> list[dg.AssetCheckResult]:
    """Every check of a resource, in the order of ``check_specs``.

    One query per table feeds both the nullability and the primary-key check, one
    more the quarantine check, and the catalog is read once (or passed in from
    :func:`read_catalog`, to read it once per run). A table never materialized
    gets a WARN result per check instead of an error.
    """
    key = dg.AssetKey.from_coercible(asset_key)
    if catalog is None:
        catalog = read_catalog(conn)
    plan = _plan(endpoint)
    parent = plan[0].name
    if parent not in catalog.columns:
        return [_absent(endpoint, key, name) for name in CHECKS]
    db, pk = catalog.database, endpoint.primary_key
    scans = {parent: _scan(conn, db, plan[0], catalog.columns[parent], [pk], q(pk))}
    for t in plan[1:]:
        if t.name in catalog.columns:
            scans[t.name] = _scan(
                conn,
                db,
                t,
                catalog.columns[t.name],
                [PARENT_ID_COLUMN, POSITION_COLUMN],
                t.sample,
                parent=(parent, pk),
            )
    return [
        _nullability(conn, key, db, plan, scans),
        _primary_key(endpoint, key, plan, scans),
        _quarantine(conn, endpoint, key, catalog),
    ]
