"""The cheaper checks give the same verdicts: every violation at once, against a Python oracle.

``run_checks`` counts NULLs with ``count(col)``, proves keys unique with a count of
distinct key hashes and only then falls back to the exact GROUP BY; these tests pin
the results on a table broken in every way at once, under forced hash collisions,
with a catalog read once and passed in, and the number of queries on healthy data.
"""

from __future__ import annotations

import typing
from typing import Any

import dagster as dg
import duckdb
import pytest

from finance_assets import models as m
from finance_assets.checks import (
    CHECKS,
    NULLABILITY,
    PRIMARY_KEY,
    QUARANTINE,
    SAMPLE_SIZE,
    read_catalog,
    run_checks,
    scan,
    tables_to_check,
)
from finance_assets.endpoints import BY_NAME
from finance_assets.warehouse import Warehouse
from finance_assets_tests.warehouse_helpers import make, write

INVOICES = BY_NAME["invoices"]
PARENT, CHILD = "finance.invoices", "finance.invoices__line_items"


@pytest.fixture
def conn(tmp_path: Any) -> typing.Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield c
    c.close()


def outcome(results: list[dg.AssetCheckResult]) -> list[tuple[Any, ...]]:
    """Everything a result says, comparable with ``==``."""
    return [
        (
            r.check_name,
            r.passed,
            r.severity,
            r.description,
            {k: v.value for k, v in r.metadata.items()},
        )
        for r in results
    ]


def by_name(results: list[dg.AssetCheckResult]) -> dict[str, dg.AssetCheckResult]:
    assert [r.check_name for r in results] == list(CHECKS)
    return {r.check_name: r for r in results}


def meta(result: dg.AssetCheckResult, name: str) -> Any:
    return result.metadata[name].value


def _nulls_last(*values: Any) -> tuple[Any, ...]:
    """DuckDB's order for ``min(x, n)``: ascending, NULL fields last."""
    return tuple((v is None, v) for v in values)


def broken(conn: duckdb.DuckDBPyConnection) -> None:
    """Invoices with NULLs in several columns, NULL and duplicate ids, child key
    duplicates, NULL child keys, orphans, and quarantined rows of two resources."""
    records = [make(m.Invoice) for _ in range(12)]
    for rec in records[:3]:
        rec.total = None
    records[3].customer_name = None
    records[4].customer_name = None
    records[5].status = None
    records[6].line_items[0].quantity = None
    records[7].line_items[1].quantity = None
    records[7].line_items[0].item_total = None
    write(conn, INVOICES, records)
    ids = sorted(r.id for r in records)
    x = conn.execute
    # Parent: one id four times (the second copy doubles it), one twice, two NULL ids.
    x(f"INSERT INTO {PARENT} SELECT * FROM {PARENT} WHERE id = ?", [ids[8]])
    x(f"INSERT INTO {PARENT} SELECT * FROM {PARENT} WHERE id = ?", [ids[8]])
    x(f"INSERT INTO {PARENT} SELECT * FROM {PARENT} WHERE id = ?", [ids[2]])
    x(f"INSERT INTO {PARENT} SELECT * REPLACE (NULL AS id) FROM {PARENT} WHERE id IN (?, ?)",
      ids[9:11])
    # Children: a duplicated key, orphans (one with a NULL parent_id), a NULL position.
    x(f"INSERT INTO {CHILD} SELECT * FROM {CHILD} WHERE parent_id = ? AND position = 0", [ids[5]])
    x(f"INSERT INTO {CHILD} SELECT * REPLACE ('999' AS parent_id) FROM {CHILD} "
      "WHERE parent_id = ?", [ids[0]])
    x(f"INSERT INTO {CHILD} SELECT * REPLACE (NULL AS parent_id) FROM {CHILD} "
      "WHERE parent_id = ? AND position = 1", [ids[1]])
    x(f"INSERT INTO {CHILD} SELECT * REPLACE (NULL AS position) FROM {CHILD} "
      "WHERE parent_id = ? AND position = 0", [ids[3]])
    # Quarantine: seven invoices (one without id) and one contact.
    for i, rid in enumerate(["5", "3", None, "9", "1", "7", "2"]):
        x(
            "INSERT INTO finance._rejected VALUES ('invoices', ?, ?, '{}', now(), 'default')",
            [rid, f"r{i}"],
        )
    x("INSERT INTO finance._rejected VALUES ('contacts', '0', 'other', '{}', now(), 'default')")


def fetch_rows(conn: duckdb.DuckDBPyConnection, table: str) -> list[dict[str, Any]]:
    cursor = conn.execute(f"SELECT * FROM {table}")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def oracle(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The expected metadata, computed in Python from every row."""
    plan = tables_to_check(INVOICES)
    parent, child = fetch_rows(conn, PARENT), fetch_rows(conn, CHILD)
    failures = []
    for t, rows in ((plan[0], parent), (plan[1], child)):
        for c in t.required:
            bad = [r for r in rows if r[c] is None]
            if not bad:
                continue
            if t.is_child:
                keys = sorted(
                    ({"parent_id": r["parent_id"], "position": r["position"]} for r in bad),
                    key=lambda k: _nulls_last(k["parent_id"], k["position"]),
                )
                failures.append({"table": t.name, "column": c, "null_count": len(bad),
                                 "sample_parent_rows": keys[:SAMPLE_SIZE]})
            else:
                ids = sorted(r["id"] for r in bad if r["id"] is not None)  # min() skips NULL
                failures.append({"table": t.name, "column": c, "null_count": len(bad),
                                 "sample_ids": ids[:SAMPLE_SIZE]})

    def key_stats(name: str, rows: list[dict[str, Any]], cols: list[str]) -> dict[str, Any]:
        full = [tuple(r[c] for c in cols) for r in rows if all(r[c] is not None for c in cols)]
        counts: dict[tuple[Any, ...], int] = {}
        for k in full:
            counts[k] = counts.get(k, 0) + 1
        dups = sorted(k for k, n in counts.items() if n > 1)
        sample = [k[0] if len(cols) == 1 else dict(zip(cols, k, strict=True)) for k in dups]
        return {
            "table": name,
            "rows": len(rows),
            "null_keys": len(rows) - len(full),
            "duplicate_keys": len(dups),
            "duplicate_extra_rows": sum(counts[k] - 1 for k in dups),
            "sample_duplicates": sample[:SAMPLE_SIZE],
        }

    parent_ids = {r["id"] for r in parent if r["id"] is not None}
    orphans = sorted(
        ((r["parent_id"], r["position"]) for r in child if r["parent_id"] not in parent_ids),
        key=lambda k: _nulls_last(*k),
    )
    child_stats = key_stats(CHILD, child, ["parent_id", "position"])
    child_stats["orphan_rows"] = len(orphans)
    child_stats["sample_orphans"] = [
        {"parent_id": p, "position": n} for p, n in orphans[:SAMPLE_SIZE]
    ]
    rejected = conn.execute(
        "SELECT id, reason FROM finance._rejected WHERE resource = 'invoices'"
    ).fetchall()
    first = sorted(rejected, key=lambda r: _nulls_last(r[0]))[:SAMPLE_SIZE]
    return {
        "failures": failures,
        "rows_checked": {PARENT: len(parent), CHILD: len(child)},
        "tables": [key_stats(PARENT, parent, ["id"]), child_stats],
        "quarantined": len(rejected),
        "sample_ids": [i for i, _ in first],
    }


def assert_matches_oracle(r: dict[str, dg.AssetCheckResult], want: dict[str, Any]) -> None:
    nul, pk, quar = r[NULLABILITY], r[PRIMARY_KEY], r[QUARANTINE]
    assert not nul.passed and not pk.passed and not quar.passed
    assert {nul.severity, pk.severity, quar.severity} == {dg.AssetCheckSeverity.ERROR}
    got = sorted(meta(nul, "failures"), key=lambda f: (f["table"], f["column"]))
    assert got == sorted(want["failures"], key=lambda f: (f["table"], f["column"]))
    assert meta(nul, "null_values") == sum(f["null_count"] for f in want["failures"])
    assert meta(nul, "rows_checked") == want["rows_checked"]
    assert meta(pk, "tables") == want["tables"]
    assert meta(pk, "rows") == want["tables"][0]["rows"]
    assert meta(pk, "null_ids") == want["tables"][0]["null_keys"]
    assert meta(pk, "duplicate_ids") == want["tables"][0]["duplicate_keys"]
    assert meta(pk, "sample_duplicate_ids") == want["tables"][0]["sample_duplicates"]
    assert meta(quar, "quarantined") == want["quarantined"]
    assert meta(quar, "sample_ids") == want["sample_ids"]


def test_every_violation_at_once_matches_the_oracle(conn) -> None:
    broken(conn)
    want = oracle(conn)
    # The scenario really has every kind of problem.
    columns = {(f["table"], f["column"]) for f in want["failures"]}
    assert {(PARENT, "id"), (PARENT, "total"), (PARENT, "customer_name"),
            (PARENT, "status"), (CHILD, "quantity"), (CHILD, "item_total")} <= columns
    parent, child = want["tables"]
    assert (parent["null_keys"], parent["duplicate_keys"], parent["duplicate_extra_rows"]) == (
        2, 2, 4
    )
    assert (child["null_keys"], child["duplicate_keys"], child["orphan_rows"]) == (2, 1, 3)
    assert want["quarantined"] == 7 and want["sample_ids"] == ["1", "2", "3", "5", "7"]

    r = by_name(run_checks(conn, INVOICES, ["finance", "invoices"]))
    assert_matches_oracle(r, want)
    assert r[PRIMARY_KEY].description == (
        f"{PARENT}: 2 NULL key(s), 2 duplicated key(s); "
        f"{CHILD}: 2 NULL key(s), 1 duplicated key(s), 3 orphan row(s)."
    )
    assert r[NULLABILITY].description.startswith(f"{meta(r[NULLABILITY], 'null_values')} NULL(s)")
    assert r[QUARANTINE].description.startswith("7 invoices record(s)")


def test_hash_collisions_cost_time_not_correctness(conn, monkeypatch) -> None:
    """A key hash that collides all the time gives the exact same results, good or bad."""
    write(conn, INVOICES, [make(m.Invoice) for _ in range(5)])
    honest = outcome(run_checks(conn, INVOICES, "invoices"))
    monkeypatch.setattr(scan, "KEY_HASH", "hash({}) % 2")
    assert outcome(run_checks(conn, INVOICES, "invoices")) == honest
    assert all(passed for _, passed, *_ in honest)
    broken(conn)
    colliding = outcome(run_checks(conn, INVOICES, "invoices"))
    monkeypatch.undo()
    assert colliding == outcome(run_checks(conn, INVOICES, "invoices"))


def test_catalog_read_once_gives_the_same_results(conn) -> None:
    broken(conn)
    catalog = read_catalog(conn)
    assert catalog.database == "warehouse"
    assert {PARENT, CHILD, "finance._rejected"} <= set(catalog.columns)
    assert "total" in catalog.columns[PARENT]
    shared = run_checks(conn, INVOICES, "invoices", catalog=catalog)
    assert outcome(shared) == outcome(run_checks(conn, INVOICES, "invoices"))
    contacts = BY_NAME["contacts"]  # never materialized: absent, from the same catalog
    absent = run_checks(conn, contacts, "contacts", catalog=catalog)
    assert [r.severity for r in absent] == [dg.AssetCheckSeverity.WARN] * len(CHECKS)


def test_missing_column_and_quarantine_table(conn) -> None:
    """A dropped non-nullable column is named, other columns still counted; no
    ``_rejected`` table means nothing quarantined."""
    rec = make(m.Invoice)
    rec.total = None
    write(conn, INVOICES, [rec, make(m.Invoice)])
    conn.execute(f"ALTER TABLE {PARENT} DROP COLUMN customer_name")
    conn.execute("DROP TABLE finance._rejected")
    r = by_name(run_checks(conn, INVOICES, "invoices"))
    failures = meta(r[NULLABILITY], "failures")
    assert failures == [
        {"table": PARENT, "column": "customer_name", "problem": "column missing"},
        {"table": PARENT, "column": "total", "null_count": 1, "sample_ids": [rec.id]},
    ]
    assert r[PRIMARY_KEY].passed
    assert r[QUARANTINE].passed and meta(r[QUARANTINE], "quarantined") == 0


class _Counting:
    """A connection that counts the statements it runs."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn, self.statements = conn, 0

    def execute(self, *args: Any) -> duckdb.DuckDBPyConnection:
        self.statements += 1
        return self.conn.execute(*args)


def test_healthy_tables_cost_one_query_each(conn) -> None:
    """Catalog, one query per table (parent and child) and one for the quarantine."""
    Warehouse(conn).ensure_tables(INVOICES)
    write(conn, INVOICES, [make(m.Invoice) for _ in range(3)])
    counting = _Counting(conn)
    results = run_checks(counting, INVOICES, "invoices")  # type: ignore[arg-type]
    assert all(r.passed for r in results)
    assert counting.statements == 4
    counting.statements = 0
    run_checks(counting, INVOICES, "invoices", catalog=read_catalog(conn))  # type: ignore[arg-type]
    assert counting.statements == 3
