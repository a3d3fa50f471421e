"""The checks' verdicts: Dagster results with metadata that names tables, columns and rows.

A failure is an ERROR (the data is wrong, not late); a table never materialized gets
a WARN result per check instead of an error.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import duckdb

from finance_assets.checks.scan import (
    Catalog,
    CheckedTable,
    TableScan,
    null_samples,
    quarantined,
    read_catalog,
    scan_table,
    tables_to_check,
    undocumented_fields,
)
from finance_assets.checks.specs import (
    CHECKS,
    NULLABILITY,
    PRIMARY_KEY,
    QUARANTINE,
    UNDOCUMENTED_FIELDS,
    CoercibleAssetKey,
)
from finance_assets.endpoints import Endpoint
from finance_assets.schema import PARENT_ID_COLUMN, POSITION_COLUMN, REJECTED_TABLE, table_name

TABLE_MISSING = "table missing"
KnownFields = frozenset[tuple[str, str]] | None  # (table, field) pairs; None: no history


def run_checks(
    conn: duckdb.DuckDBPyConnection,
    endpoint: Endpoint,
    asset_key: CoercibleAssetKey,
    *,
    catalog: Catalog | None = None,
    known_fields: KnownFields = None,
) -> list[dg.AssetCheckResult]:
    """Every check of a resource, in the order of ``check_specs``.

    ``known_fields`` are the undocumented fields the previous evaluation listed
    (``known_undocumented_fields``); None before the first, which sets the baseline.

    One query per table feeds both the nullability and the primary-key check, one
    more the quarantine check, and the catalog is read once (or passed in from
    ``read_catalog``, to read it once per run).
    """
    key = dg.AssetKey.from_coercible(asset_key)
    if catalog is None:
        catalog = read_catalog(conn)
    parent, *children = tables_to_check(endpoint)
    if parent.name not in catalog.columns:
        return [_absent(endpoint, key, name) for name in CHECKS]
    scans = {parent.name: scan_table(conn, catalog, parent, catalog.columns[parent.name])}
    for child in children:
        if child.name in catalog.columns:
            columns = catalog.columns[child.name]
            scans[child.name] = scan_table(conn, catalog, child, columns, parent=parent)
    checked = [parent, *children]
    return [
        _nullability(conn, key, catalog, checked, scans),
        _primary_key(endpoint, key, checked, scans),
        _quarantine(conn, endpoint, key, catalog),
        _undocumented_fields(conn, endpoint, key, catalog, scans, known_fields),
    ]


def _nullability(
    conn: duckdb.DuckDBPyConnection,
    key: dg.AssetKey,
    catalog: Catalog,
    checked: list[CheckedTable],
    scans: dict[str, TableScan],
) -> dg.AssetCheckResult:
    """NULLs of every non-nullable column (counted by the scans); sample offending rows."""
    failures: list[dict[str, Any]] = []
    rows_per_table: dict[str, int | None] = {}
    columns_checked = 0
    for table in checked:
        columns_checked += len(table.required)
        scan = scans.get(table.name)
        if scan is None:
            rows_per_table[table.name] = None
            failures.append({"table": table.name, "column": "*", "problem": TABLE_MISSING})
            continue
        failures += [
            {"table": table.name, "column": c, "problem": "column missing"} for c in scan.missing
        ]
        rows_per_table[table.name] = scan.rows
        failing = [(c, n) for c, n in scan.nulls if n]
        if not failing:
            continue
        samples = null_samples(conn, catalog, table, [c for c, _ in failing])
        for (column, n), sample in zip(failing, samples, strict=True):
            failures.append(
                {
                    "table": table.name,
                    "column": column,
                    "null_count": n,
                    "sample_parent_rows" if table.is_child else "sample_ids": sample,
                }
            )

    total = sum(f.get("null_count", 0) for f in failures)
    metadata: dict[str, Any] = {
        "columns_checked": dg.MetadataValue.int(columns_checked),
        "null_values": dg.MetadataValue.int(total),
        "rows_checked": dg.MetadataValue.json(rows_per_table),
    }
    if not failures:
        description = f"No NULL in {columns_checked} non-nullable columns."
        return _result(key, NULLABILITY, True, description, metadata)
    metadata["failures"] = dg.MetadataValue.json(failures)
    metadata["summary"] = _markdown_table(
        ["table", "column", "nulls / problem", "samples"],
        [
            [
                f["table"],
                f["column"],
                f.get("null_count", f.get("problem")),
                _samples_text(f.get("sample_ids") or f.get("sample_parent_rows") or []),
            ]
            for f in failures
        ],
    )
    columns = ", ".join(f"{f['table']}.{f['column']}" for f in failures)
    description = f"{total} NULL(s) in non-nullable columns: {columns}."
    return _result(key, NULLABILITY, False, description, metadata)


def _primary_key(
    endpoint: Endpoint,
    key: dg.AssetKey,
    checked: list[CheckedTable],
    scans: dict[str, TableScan],
) -> dg.AssetCheckResult:
    """``id`` non-null and unique; child (parent_id, position) unique and pointing at a parent."""
    parent, *children = checked
    stats = [scans[parent.name].keys]
    for child in children:
        scan = scans.get(child.name)
        stats.append(scan.keys if scan else {"table": child.name, "problem": TABLE_MISSING})

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
        description = (
            f"`{endpoint.primary_key}` unique and non-null over {p['rows']} rows; "
            "child keys intact."
        )
        return _result(key, PRIMARY_KEY, True, description, metadata)
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


def _quarantine(
    conn: duckdb.DuckDBPyConnection, endpoint: Endpoint, key: dg.AssetKey, catalog: Catalog
) -> dg.AssetCheckResult:
    """Fail while ``finance._rejected`` holds rows of this resource; name count and why."""
    count, samples = quarantined(conn, catalog, endpoint)
    metadata: dict[str, Any] = {
        "quarantined": dg.MetadataValue.int(count),
        "table": dg.MetadataValue.text(REJECTED_TABLE),
    }
    if count == 0:
        description = f"No {endpoint.name} record in {REJECTED_TABLE}."
        return _result(key, QUARANTINE, True, description, metadata)
    metadata["sample_ids"] = dg.MetadataValue.json([i for i, _ in samples])
    metadata["sample_reasons"] = dg.MetadataValue.json([r for _, r in samples])
    metadata["summary"] = _markdown_table(["id", "reason"], [[i, r] for i, r in samples])
    description = (
        f"{count} {endpoint.name} record(s) the schema cannot hold are quarantined in "
        f"{REJECTED_TABLE} (see sample reasons); fix them at the source, the next "
        "load of a fixed record clears its row."
    )
    return _result(key, QUARANTINE, False, description, metadata)


def _undocumented_fields(
    conn: duckdb.DuckDBPyConnection,
    endpoint: Endpoint,
    key: dg.AssetKey,
    catalog: Catalog,
    scans: dict[str, TableScan],
    known_fields: KnownFields,
) -> dg.AssetCheckResult:
    """WARN when a field the contract does not document appears that the previous
    evaluation did not list; the fields the API has been sending are listed, and pass."""
    fields = undocumented_fields(conn, catalog, endpoint, scans)
    started = [] if known_fields is None else [
        f for f in fields if (f.table, f.field) not in known_fields
    ]
    rows = [
        {
            "table": f.table,
            "field": f.field,
            "records": f.records,
            "first_seen": f.first_seen.isoformat() if f.first_seen else None,
            "new": f in started,
        }
        for f in fields
    ]
    metadata: dict[str, Any] = {
        "undocumented_fields": dg.MetadataValue.int(len(fields)),
        "fields": dg.MetadataValue.json(rows),
    }
    if rows:
        metadata["summary"] = _markdown_table(
            ["table", "field", "records", "first seen", "new"],
            [[r["table"], r["field"], r["records"], r["first_seen"], r["new"]] for r in rows],
        )
    if not started:
        known = ", ".join(sorted({f.field for f in fields})) or "none"
        description = f"No undocumented field the API started to send (known: {known})."
    else:
        named = ", ".join(f"{f.table}.{f.field} ({f.records} records)" for f in started)
        description = (
            f"The API started to send undocumented fields: {named}; they are kept in _extra. "
            "Check the API's changelog: a new field often comes before a changed one."
        )
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=UNDOCUMENTED_FIELDS,
        passed=not started,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


def known_undocumented_fields(instance: dg.DagsterInstance, key: dg.AssetKey) -> KnownFields:
    """The (table, field) pairs the latest ``undocumented_fields`` evaluation of the asset
    listed; None when it has never been evaluated (the next evaluation is the baseline)."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, UNDOCUMENTED_FIELDS), limit=5
    )  # the newest may be this run's own, planned and not yet evaluated
    evaluation = next(
        (r.evaluation for r in history if isinstance(r.evaluation, dg.AssetCheckEvaluation)),
        None,
    )
    if evaluation is None or "fields" not in evaluation.metadata:
        return None
    listed = evaluation.metadata["fields"].value
    return frozenset((f["table"], f["field"]) for f in listed or [])


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
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def _markdown_table(header: list[str], rows: list[list[Any]]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _samples_text(samples: list[Any]) -> str:
    """``id`` or ``parent_id#position``, comma-separated, for the markdown summary."""
    return ", ".join(
        f"`{x[PARENT_ID_COLUMN]}#{x[POSITION_COLUMN]}`" if isinstance(x, dict) else f"`{x}`"
        for x in samples
    )
