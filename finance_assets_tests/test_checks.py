"""Asset check tests on real DuckDB files: pass, fail with the right metadata, absent tables."""

from __future__ import annotations

import typing
from decimal import Decimal
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
    UNDOCUMENTED_FIELDS,
    check_specs,
    column_schema,
    run_checks,
)
from finance_assets.endpoints import BY_NAME, ENDPOINTS, Endpoint
from finance_assets.schema import model_columns
from finance_assets.warehouse import Warehouse
from finance_assets_tests.warehouse_helpers import make, write

INVOICES = BY_NAME["invoices"]
KEY = dg.AssetKey(["finance", "invoices"])


@pytest.fixture
def conn(tmp_path: Any) -> typing.Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield c
    c.close()


def results(conn: duckdb.DuckDBPyConnection, endpoint: Endpoint = INVOICES) -> dict[str, Any]:
    out = run_checks(conn, endpoint, ["finance", endpoint.name])
    assert [r.check_name for r in out] == list(CHECKS)
    return {r.check_name: r for r in out}


def meta(result: dg.AssetCheckResult, name: str) -> Any:
    return result.metadata[name].value


# ---------- definitions metadata ----------
def test_column_schema_and_specs() -> None:
    schema = column_schema(INVOICES)
    cols = {c.name: c for c in schema.columns}
    assert list(cols)[-4:] == ["_extra", "_loaded_at", "_deleted_at", "_organization"]
    assert "line_items" not in cols
    assert cols["total"].type == "DECIMAL(18,2)"
    assert cols["total"].constraints.nullable is False
    assert cols["id"].constraints.nullable is False and cols["id"].constraints.unique
    assert cols["notes"].constraints.nullable is True
    assert cols["created_time"].type == "TIMESTAMPTZ"
    assert all(c.description for c in schema.columns)
    specs = check_specs(INVOICES, KEY)
    assert [(s.name, s.asset_key) for s in specs] == [
        (NULLABILITY, KEY), (PRIMARY_KEY, KEY), (QUARANTINE, KEY), (UNDOCUMENTED_FIELDS, KEY)
    ]
    # what is wrong with the records blocks; what the API adds beyond its contract warns
    assert [s.blocking for s in specs] == [True, True, True, False]
    assert all(s.description for s in specs)


# ---------- passing ----------
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_checks_pass_on_valid_data(conn, endpoint: Endpoint) -> None:
    write(conn, endpoint, [make(endpoint.model) for _ in range(3)])
    r = results(conn, endpoint)
    assert r[NULLABILITY].passed and r[PRIMARY_KEY].passed
    models = [endpoint.model, *endpoint.children.values()]
    expected = sum(not s.nullable for model in models for s in model_columns(model))
    assert meta(r[NULLABILITY], "columns_checked") == expected > 0
    assert meta(r[NULLABILITY], "null_values") == 0
    assert meta(r[PRIMARY_KEY], "rows") == 3


def test_empty_tables_pass(conn) -> None:
    Warehouse(conn).ensure_tables(INVOICES)
    r = results(conn)
    assert r[NULLABILITY].passed and r[PRIMARY_KEY].passed
    assert meta(r[PRIMARY_KEY], "rows") == 0
    assert meta(r[NULLABILITY], "rows_checked") == {
        "finance.invoices": 0,
        "finance.invoices__line_items": 0,
    }


def test_absent_tables_reported_not_raised(conn) -> None:
    r = results(conn)
    for check in (NULLABILITY, PRIMARY_KEY):
        assert not r[check].passed
        assert r[check].severity == dg.AssetCheckSeverity.WARN
        assert "not been materialized" in r[check].description
        assert meta(r[check], "table_exists") is False


def test_missing_child_table_fails(conn) -> None:
    write(conn, INVOICES, [make(m.Invoice)])
    conn.execute("DROP TABLE finance.invoices__line_items")
    r = results(conn)
    assert not r[NULLABILITY].passed and not r[PRIMARY_KEY].passed
    assert "table missing" in r[PRIMARY_KEY].description


# ---------- nullability failures ----------
def test_nulls_in_non_nullable_fields_fail_with_samples(conn) -> None:
    good = make(m.Invoice)
    bad = [make(m.Invoice) for _ in range(7)]
    for rec in bad:
        rec.total = None  # loaded as it came
    bad[0].customer_name = None
    bad[1].line_items[1].quantity = None
    write(conn, INVOICES, [good, *bad])

    r = results(conn)[NULLABILITY]
    assert not r.passed and r.severity == dg.AssetCheckSeverity.ERROR
    failures = {(f["table"], f["column"]): f for f in meta(r, "failures")}
    assert set(failures) == {
        ("finance.invoices", "total"),
        ("finance.invoices", "customer_name"),
        ("finance.invoices__line_items", "quantity"),
    }
    total = failures["finance.invoices", "total"]
    assert total["null_count"] == 7
    assert total["sample_ids"] == sorted(r.id for r in bad)[:5]
    assert failures["finance.invoices", "customer_name"]["sample_ids"] == [bad[0].id]
    child = failures["finance.invoices__line_items", "quantity"]
    assert child["null_count"] == 1
    assert child["sample_parent_rows"] == [{"parent_id": bad[1].id, "position": 1}]
    assert meta(r, "null_values") == 9
    assert "finance.invoices.total" in r.description
    assert "| finance.invoices | total | 7 |" in meta(r, "summary")
    assert f"`{bad[1].id}#1`" in meta(r, "summary")
    # Nullable columns with NULLs do not fail.
    assert ("finance.invoices", "notes") not in failures


def test_nullable_nulls_pass(conn) -> None:
    write(conn, INVOICES, [make(m.Invoice, notes=None, reference_number=None)])
    assert results(conn)[NULLABILITY].passed


# ---------- primary key failures ----------
def test_duplicate_and_null_ids_fail(conn) -> None:
    a, b = make(m.Invoice), make(m.Invoice)
    write(conn, INVOICES, [a, b])
    assert results(conn)[PRIMARY_KEY].passed
    # Corrupt the table behind the writer's back.
    conn.execute("INSERT INTO finance.invoices SELECT * FROM finance.invoices WHERE id = ?", [a.id])
    conn.execute(
        "INSERT INTO finance.invoices SELECT * REPLACE (NULL AS id) FROM finance.invoices "
        "WHERE id = ? LIMIT 1",
        [b.id],
    )
    r = results(conn)
    pk = r[PRIMARY_KEY]
    assert not pk.passed and pk.severity == dg.AssetCheckSeverity.ERROR
    assert meta(pk, "duplicate_ids") == 1
    assert meta(pk, "null_ids") == 1
    assert meta(pk, "sample_duplicate_ids") == [a.id]
    assert meta(pk, "rows") == 4
    # A NULL id is also a nullability failure (id is non-nullable).
    nul = {(f["table"], f["column"]) for f in meta(r[NULLABILITY], "failures")}
    assert ("finance.invoices", "id") in nul


def test_duplicate_child_keys_and_orphans_fail(conn) -> None:
    a = make(m.Invoice)
    write(conn, INVOICES, [a])
    conn.execute(
        "INSERT INTO finance.invoices__line_items SELECT * FROM finance.invoices__line_items "
        "WHERE position = 0"
    )
    conn.execute(
        "INSERT INTO finance.invoices__line_items SELECT * REPLACE ('999' AS parent_id) "
        "FROM finance.invoices__line_items WHERE position = 1"
    )
    pk = results(conn)[PRIMARY_KEY]
    assert not pk.passed
    child = next(t for t in meta(pk, "tables") if t["table"] == "finance.invoices__line_items")
    assert child["duplicate_keys"] == 1
    assert child["sample_duplicates"] == [{"parent_id": a.id, "position": 0}]
    assert child["orphan_rows"] == 1
    assert child["sample_orphans"] == [{"parent_id": "999", "position": 1}]
    assert meta(pk, "duplicate_ids") == 0  # the parent itself is fine


def test_checks_after_upserts_stay_green(conn) -> None:
    a = make(m.Invoice)
    write(conn, INVOICES, [a, a.model_copy(update={"total": Decimal("5.00")})])
    write(conn, INVOICES, [a.model_copy(update={"line_items": a.line_items[:1]})])
    r = results(conn)
    assert r[NULLABILITY].passed and r[PRIMARY_KEY].passed
