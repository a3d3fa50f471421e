"""Warehouse tests on real DuckDB files: DDL, exact round-trips, merge semantics, rollback."""

from __future__ import annotations

import datetime as dt
import json
import typing
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from finance_assets import models as m
from finance_assets.checks import run_checks
from finance_assets.endpoints import BY_NAME, ENDPOINTS, Endpoint
from finance_assets.records.json_text import undocumented_fields_json
from finance_assets.records.page_columns import ValueDoesNotFit, columns_from_records
from finance_assets.records.validation import validate_page
from finance_assets.schema import child_column_specs, child_table_name, column_specs, table_name
from finance_assets.warehouse import MergeStep, Warehouse, Writer, summary_rows
from finance_assets_tests.warehouse_helpers import INVOICES, LOADED_AT, Rej, dump, make, write


# ---------- fixtures ----------
@pytest.fixture
def conn(tmp_path: Any) -> typing.Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield c
    c.close()


# ---------- DDL ----------
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_ddl_matches_model_for_every_endpoint(conn, endpoint: Endpoint) -> None:
    wh = Warehouse(conn)
    wh.ensure_tables(endpoint)
    wh.ensure_tables(endpoint)  # idempotent
    tstz = "TIMESTAMP WITH TIME ZONE"

    def described(table: str) -> list[tuple[str, str, str]]:
        return [(r[0], r[1], r[2]) for r in conn.execute(f"DESCRIBE {table}").fetchall()]

    def expected(specs: list[Any]) -> list[tuple[str, str, str]]:
        # Every column nullable: bad records load as they came and the checks report them.
        return [(s.name, tstz if s.sql_type == "TIMESTAMPTZ" else s.sql_type, "YES") for s in specs]

    parent = expected(column_specs(endpoint.model))
    assert described(table_name(endpoint)) == parent
    assert parent[-4:] == [
        ("_extra", "JSON", "YES"),
        ("_loaded_at", tstz, "YES"),
        ("_deleted_at", tstz, "YES"),
        ("_organization", "VARCHAR", "YES"),
    ]
    for field, item in endpoint.children.items():
        got = described(child_table_name(endpoint, field))
        assert got[:2] == [("parent_id", "VARCHAR", "YES"), ("position", "INTEGER", "YES")]
        assert got == expected(child_column_specs(item))
    assert not any(name in endpoint.children for name, *_ in described(table_name(endpoint)))


def test_ddl_type_mapping_spot_checks(conn) -> None:
    wh = Warehouse(conn)
    for e in ENDPOINTS:
        wh.ensure_tables(e)
    types = {
        (t, c): ty
        for t, c, ty in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'finance'"
        ).fetchall()
    }
    assert len({t for t, _ in types}) == 16 + 8 + 2  # 8 nested arrays, quarantine, sync state
    assert types["invoices", "total"] == "DECIMAL(18,2)"
    assert types["invoices", "exchange_rate"] == "DECIMAL(18,6)"
    assert types["invoices", "created_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["invoices", "date"] == "DATE"
    assert types["invoices", "payment_terms"] == "BIGINT"
    assert types["invoices", "status"] == "VARCHAR"
    assert types["invoices", "id"] == "VARCHAR"
    assert types["banking", "is_active"] == "BOOLEAN"
    assert types["items", "rate"] == "DECIMAL(22,6)"
    assert types["items", "stock_on_hand"] == "DECIMAL(18,6)"
    assert types["taxes", "tax_percentage"] == "DECIMAL(7,4)"
    assert types["invoices__line_items", "quantity"] == "DECIMAL(18,6)"
    assert types["customer_payments__applied_invoices", "amount_applied"] == "DECIMAL(18,2)"
    assert types["journals__line_items", "debit_or_credit"] == "VARCHAR"


# ---------- round trips ----------
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_round_trip_every_endpoint(conn, endpoint: Endpoint) -> None:
    records = [make(endpoint.model) for _ in range(3)]
    stats = write(conn, endpoint, records[:2], records[2:])
    assert (stats.rows_staged, stats.distinct_ids, stats.inserted, stats.updated) == (3, 3, 3, 0)
    specs = [s for s in column_specs(endpoint.model) if s.from_model]
    select = ", ".join(f'"{s.name}"' for s in specs)
    rows = conn.execute(f"SELECT {select} FROM {table_name(endpoint)} ORDER BY id").fetchall()
    for rec, row in zip(records, rows, strict=True):
        want = [len(getattr(rec, s.counts)) if s.counts else getattr(rec, s.name) for s in specs]
        assert row == tuple(want)
    for field in endpoint.children:
        table = child_table_name(endpoint, field)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (6,)
        assert stats.child_rows[table] == 6
    summary = Warehouse(conn).summary(endpoint)
    assert summary.rows == 3
    assert summary.child_rows == {child_table_name(endpoint, f): 6 for f in endpoint.children}
    loaded = conn.execute(f"SELECT DISTINCT _loaded_at FROM {table_name(endpoint)}").fetchall()
    assert loaded == [(LOADED_AT,)]


def test_exact_decimals_big_ids_and_instants(conn) -> None:
    big_id = str(2**64 + 17)
    line = make(m.LineItem, rate=Decimal("1234567890123456.123456"), quantity=Decimal("0.000001"))
    inv = make(
        m.Invoice,
        id=big_id,
        customer_id=str(2**63 + 1),
        total=Decimal("9999999999999999.99"),
        balance=Decimal("-0.01"),
        sub_total=Decimal("1234567890123456.78"),
        exchange_rate=Decimal("83.123456"),
        created_time="2026-03-01T10:15:00+05:30",
        last_modified_time="2026-03-01T00:00:00-04:00",
        line_items=[line.model_dump()],
    )
    write(conn, INVOICES, [inv])
    row = conn.execute(
        "SELECT id, customer_id, total, balance, sub_total, exchange_rate, total::VARCHAR, "
        "created_time, last_modified_time FROM finance.invoices"
    ).fetchone()
    assert row == (
        big_id,
        str(2**63 + 1),
        Decimal("9999999999999999.99"),
        Decimal("-0.01"),
        Decimal("1234567890123456.78"),
        Decimal("83.123456"),
        "9999999999999999.99",
        dt.datetime(2026, 3, 1, 4, 45, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 3, 1, 4, 0, tzinfo=dt.timezone.utc),
    )
    child = conn.execute(
        "SELECT parent_id, position, rate, quantity FROM finance.invoices__line_items"
    ).fetchall()
    assert child == [(big_id, 0, Decimal("1234567890123456.123456"), Decimal("0.000001"))]
    # Sums stay exact in SQL too.
    assert conn.execute("SELECT sum(total) + sum(balance) FROM finance.invoices").fetchone() == (
        Decimal("9999999999999999.98"),
    )


# ---------- merge semantics ----------
def test_upsert_updates_without_duplicates(conn) -> None:
    a, b = make(m.Invoice), make(m.Invoice)
    write(conn, INVOICES, [a, b])
    a2 = a.model_copy(update={"total": Decimal("42.00"), "status": "paid"})
    stats = write(conn, INVOICES, [a2])
    assert (stats.distinct_ids, stats.inserted, stats.updated) == (1, 0, 1)
    rows = conn.execute("SELECT id, total, status FROM finance.invoices ORDER BY id").fetchall()
    assert rows == [(a.id, Decimal("42.00"), "paid"), (b.id, b.total, b.status)]
    assert conn.execute("SELECT count(*) FROM finance.invoices__line_items").fetchone() == (4,)


def test_children_replaced_when_parent_updated(conn) -> None:
    a, b = make(m.Invoice), make(m.Invoice)
    items = [make(m.LineItem, description=f"line {i}") for i in range(3)]
    a = a.model_copy(update={"line_items": items})
    write(conn, INVOICES, [a, b])
    assert conn.execute(
        "SELECT count(*) FROM finance.invoices__line_items WHERE parent_id = ?", [a.id]
    ).fetchone() == (3,)
    write(conn, INVOICES, [a.model_copy(update={"line_items": [items[2]]})])
    rows = conn.execute(
        "SELECT parent_id, position, description FROM finance.invoices__line_items ORDER BY ALL"
    ).fetchall()
    assert [r for r in rows if r[0] == a.id] == [(a.id, 0, "line 2")]
    assert len([r for r in rows if r[0] == b.id]) == 2  # untouched
    # An empty list removes all children of the parent.
    write(conn, INVOICES, [a.model_copy(update={"line_items": []})])
    assert conn.execute(
        "SELECT count(*) FROM finance.invoices__line_items WHERE parent_id = ?", [a.id]
    ).fetchone() == (0,)


@pytest.mark.parametrize("flush_rows", [1, 50_000])
def test_duplicate_id_in_one_write_last_wins(conn, flush_rows: int) -> None:
    a = make(m.Invoice)
    first = a.model_copy(update={"total": Decimal("1.00"), "line_items": [make(m.LineItem)] * 3})
    middle = a.model_copy(update={"total": Decimal("2.00")})
    last = a.model_copy(update={"total": Decimal("3.00"), "line_items": [make(m.LineItem)]})
    other = make(m.Invoice)
    # Across pages and within one page.
    stats = write(conn, INVOICES, [first, other], [middle, last], flush_rows=flush_rows)
    assert (stats.rows_staged, stats.distinct_ids, stats.inserted) == (4, 2, 2)
    rows = conn.execute("SELECT id, total FROM finance.invoices WHERE id = ?", [a.id]).fetchall()
    assert rows == [(a.id, Decimal("3.00"))]
    assert conn.execute(
        "SELECT count(*) FROM finance.invoices__line_items WHERE parent_id = ?", [a.id]
    ).fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM finance.invoices").fetchone() == (2,)


def test_rollback_leaves_tables_exactly_as_before(conn) -> None:
    a, b = make(m.Invoice), make(m.Invoice)
    write(conn, INVOICES, [a, b])
    before = dump(conn, INVOICES)
    wh = Warehouse(conn)
    with pytest.raises(RuntimeError, match="boom"), wh.writer(INVOICES, LOADED_AT, 1) as w:
        changed = a.model_copy(update={"total": Decimal("0.01"), "line_items": []})
        w.add(columns_from_records(INVOICES, [changed, make(m.Invoice)]))
        raise RuntimeError("boom")
    assert dump(conn, INVOICES) == before
    # The connection is usable afterwards and no staging table leaked.
    assert conn.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone() == (0,)
    write(conn, INVOICES, [make(m.Invoice)])
    assert conn.execute("SELECT count(*) FROM finance.invoices").fetchone() == (3,)


def test_failure_after_merge_rolls_back(conn) -> None:
    """Deletes and inserts already ran when the failure hits: still nothing changes."""
    a, b = make(m.Invoice), make(m.Invoice)
    write(conn, INVOICES, [a, b])
    before = dump(conn, INVOICES)

    def fail_at_commit(step: MergeStep) -> None:
        if step is MergeStep.COMMIT:
            assert conn.execute("SELECT count(*) FROM finance.invoices").fetchone() == (3,)
            raise OSError("disk full")

    changed = a.model_copy(update={"total": Decimal("0.01"), "line_items": []})
    writer = Writer(conn, INVOICES, LOADED_AT, before_merge_statement=fail_at_commit)
    with pytest.raises(OSError), writer as w:
        w.add(columns_from_records(INVOICES, [changed, make(m.Invoice)]))
    assert dump(conn, INVOICES) == before


def test_rollback_of_first_write_creates_nothing(conn) -> None:
    with pytest.raises(ValueError), Warehouse(conn).writer(INVOICES, LOADED_AT) as w:
        w.add(columns_from_records(INVOICES, [make(m.Invoice)]))
        bad = make(m.Invoice)
        bad.id = None  # the caller must not pass these; the writer refuses them
        w.add(columns_from_records(INVOICES, [bad]))
    assert Warehouse(conn).summary(INVOICES).rows is None


def test_empty_write_creates_empty_tables(conn) -> None:
    stats = write(conn, INVOICES)
    assert (stats.rows_staged, stats.inserted, stats.updated, stats.committed) == (0, 0, 0, True)
    s = Warehouse(conn).summary(INVOICES)
    assert (s.rows, s.child_rows) == (0, {"finance.invoices__line_items": 0})


def test_persists_across_connections(tmp_path) -> None:
    path = str(tmp_path / "w.duckdb")
    a = make(m.Invoice)
    with duckdb.connect(path) as c:
        write(c, INVOICES, [a])
    with duckdb.connect(path, read_only=True) as c:
        assert c.execute("SELECT id, total FROM finance.invoices").fetchall() == [(a.id, a.total)]


# ---------- _extra ----------
def test_extras_json_is_sorted_compact_json_with_exact_numbers() -> None:
    """What ``json.dumps`` would write (sorted keys, compact, unicode kept), except that
    decimals are written from their own digits."""
    plain = {"b": ["ü東京\n\t\"\\ \u2028 \x01", None, True, False, -3, 2.5, {"z": 1, "a": "é"}],
             "a": "x", "\u00e9": []}
    assert undocumented_fields_json(plain) == json.dumps(
        plain, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    exact = {"n": Decimal("0.10"), "e": Decimal("1E+2")}
    assert undocumented_fields_json(exact) == '{"e":1E+2,"n":0.10}'
    assert undocumented_fields_json({}) is None and undocumented_fields_json(None) is None


def test_extra_fields_exact_on_parents_and_children(conn) -> None:
    raw = json.loads(
        '{"z_big": 12345678901234567890.123456789, "a_nested": {"b": [1, 0.10, null], "a": "x"},'
        ' "m_flag": true}',
        parse_float=Decimal,
    )
    line = {**make(m.LineItem).model_dump(), "undocumented_tax": Decimal("0.0000001")}
    inv = make(m.Invoice, **raw, line_items=[line, make(m.LineItem).model_dump()])
    plain = make(m.Invoice)
    write(conn, INVOICES, [inv, plain])
    expected = (
        '{"a_nested":{"a":"x","b":[1,0.10,null]},"m_flag":true,'
        '"z_big":12345678901234567890.123456789}'
    )
    assert undocumented_fields_json(inv.model_extra) == expected
    rows = dict(conn.execute("SELECT id, _extra FROM finance.invoices").fetchall())
    assert rows == {inv.id: expected, plain.id: None}
    assert json.loads(rows[inv.id], parse_float=Decimal) == raw
    child = conn.execute(
        "SELECT position, _extra FROM finance.invoices__line_items WHERE parent_id = ? ORDER BY 1",
        [inv.id],
    ).fetchall()
    assert child == [(0, '{"undocumented_tax":1E-7}'), (1, None)]
    assert json.loads(child[0][1], parse_float=Decimal) == {"undocumented_tax": Decimal("1E-7")}
    # DuckDB sees valid JSON.
    assert conn.execute(
        "SELECT json_extract_string(_extra, '$.a_nested.a') FROM finance.invoices WHERE id = ?",
        [inv.id],
    ).fetchone() == ("x",)


# ---------- imperfect records ----------
def test_null_in_non_nullable_field_is_loaded(conn) -> None:
    inv = make(m.Invoice)
    inv.total = None  # what the client passes when that is the record's only fault
    inv.line_items[1].quantity = None
    write(conn, INVOICES, [inv])
    assert conn.execute("SELECT total FROM finance.invoices").fetchall() == [(None,)]
    assert conn.execute(
        "SELECT position FROM finance.invoices__line_items WHERE quantity IS NULL"
    ).fetchall() == [(1,)]


def test_wire_values_load_exactly(conn) -> None:
    """A record as the wire carries it (text instants and dates, exact decimals) loads
    exactly through validation, the one way records reach the warehouse."""
    wire = make(m.Invoice).model_dump(mode="json")
    wire["total"] = Decimal("10.10")
    (rec,), rejected = validate_page(m.Invoice, [wire])
    assert rejected == []
    write(conn, INVOICES, [rec])
    row = conn.execute(
        "SELECT created_time, date, total, exchange_rate FROM finance.invoices"
    ).fetchone()
    assert row == (
        dt.datetime(2026, 3, 1, 4, 45, tzinfo=dt.timezone.utc),
        dt.date(2026, 2, 28),
        Decimal("10.10"),
        Decimal(wire["exchange_rate"]),
    )
    assert conn.execute("SELECT count(*) FROM finance.invoices__line_items").fetchone() == (2,)


def test_validated_loadable_records_with_nulls_load(conn) -> None:
    """The client's path: validation's all-nullable variant, including a null array."""
    raw = [
        {**make(m.Invoice).model_dump(), "customer_name": None},
        {**make(m.Invoice).model_dump(), "line_items": None},
        {**make(m.Invoice).model_dump(), "total": "not a number"},
    ]
    valid, rejected = validate_page(m.Invoice, raw)
    assert len(valid) == 2 and len(rejected) == 1
    with Warehouse(conn).writer(INVOICES, LOADED_AT) as w:
        w.add(columns_from_records(INVOICES, valid))
        w.reject(rejected)
    assert (w.stats.rows_staged, w.stats.inserted, w.stats.updated, w.stats.rejected) == (
        2,
        2,
        0,
        1,
    )
    assert conn.execute("SELECT count(*) FROM finance.invoices").fetchone() == (2,)
    assert conn.execute(
        "SELECT count(*) FROM finance.invoices WHERE customer_name IS NULL"
    ).fetchone() == (1,)
    # A null array loads as no children (indistinguishable from [] in the tables).
    assert conn.execute("SELECT count(*) FROM finance.invoices__line_items").fetchone() == (2,)


def test_rejected_records_are_quarantined_and_superseded(conn) -> None:
    good = make(m.Invoice)
    bad = Rej("77", {"id": "77", "total": "x", "amount": Decimal("1.10")}, "total: not a decimal")
    anon = Rej(None, {"id": None}, "id: null")
    with Warehouse(conn).writer(INVOICES, LOADED_AT) as w:
        w.add(columns_from_records(INVOICES, [good]))
        w.reject([bad, anon])
    rows = conn.execute(
        "SELECT resource, id, reason, raw FROM finance._rejected ORDER BY id NULLS LAST"
    ).fetchall()
    assert rows == [
        ("invoices", "77", "total: not a decimal", '{"amount":1.10,"id":"77","total":"x"}'),
        ("invoices", None, "id: null", '{"id":null}'),
    ]
    # Re-running with the same rejections does not pile up; a valid load of id 77 resolves it.
    fixed = make(m.Invoice, id="77")
    with Warehouse(conn).writer(INVOICES, LOADED_AT) as w:
        w.add(columns_from_records(INVOICES, [fixed]))
        w.reject([anon])
    assert conn.execute("SELECT id FROM finance._rejected").fetchall() == [(None,)]
    # Rolled back with everything else.
    with pytest.raises(RuntimeError), Warehouse(conn).writer(INVOICES, LOADED_AT) as w:
        w.reject([bad])
        raise RuntimeError
    assert conn.execute("SELECT count(*) FROM finance._rejected").fetchone() == (1,)
    assert ("finance._rejected", 1) in summary_rows(conn, [INVOICES])


def test_row_count_and_summary_rows(conn) -> None:
    wh = Warehouse(conn)
    assert wh.row_count(INVOICES) == 0
    assert summary_rows(conn, [INVOICES, BY_NAME["users"]]) == [
        ("finance.invoices", 0),
        ("finance.invoices__line_items", 0),
        ("finance.users", 0),
    ]
    write(conn, INVOICES, [make(m.Invoice), make(m.Invoice)])
    assert wh.row_count(INVOICES) == 2
    assert summary_rows(conn, [INVOICES]) == [
        ("finance.invoices", 2),
        ("finance.invoices__line_items", 4),
        ("finance._rejected", 0),
    ]


def test_database_file_named_like_the_schema(tmp_path) -> None:
    """``finance.duckdb`` makes ``finance.t`` ambiguous in DuckDB; every statement qualifies."""
    with duckdb.connect(str(tmp_path / "finance.duckdb")) as c:
        a = make(m.Invoice)
        write(c, INVOICES, [a])
        write(c, INVOICES, [a.model_copy(update={"line_items": a.line_items[:1]})])
        assert Warehouse(c).summary(INVOICES).child_rows == {"finance.invoices__line_items": 1}
        assert all(r.passed for r in run_checks(c, INVOICES, "invoices"))
        assert c.execute("SELECT id FROM finance.finance.invoices").fetchall() == [(a.id,)]


def test_value_that_does_not_fit_stages_nothing_of_its_page(conn) -> None:
    """A child decimal beyond its scale raises in ``add``; no half page is left staged."""
    good, bad = make(m.Invoice), make(m.Invoice)
    bad.line_items[1].quantity = Decimal("0.0000001")  # 7 decimals into DECIMAL(18,6)
    with Warehouse(conn).writer(INVOICES, LOADED_AT) as w:
        with pytest.raises(ValueDoesNotFit, match="quantity"):
            w.add(columns_from_records(INVOICES, [bad]))
        w.add(columns_from_records(INVOICES, [good]))
    assert (
        dump(conn, INVOICES)["finance.invoices"]
        == conn.execute(
            "SELECT * FROM finance.invoices WHERE id = ? ORDER BY ALL", [good.id]
        ).fetchall()
    )
    assert Warehouse(conn).summary(INVOICES).child_rows == {"finance.invoices__line_items": 2}


def test_writer_requires_aware_loaded_at(conn) -> None:
    with pytest.raises(ValueError), Warehouse(conn).writer(INVOICES, dt.datetime(2026, 1, 1)):
        pass
