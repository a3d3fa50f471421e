"""The finance marts built by real Dagster runs over a loaded sandbox, compared with the
same reports computed in Python from the sandbox's records (``marts_model``), to the cent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from finance_assets.assets import build_finance_assets
from finance_assets.marts import CHECKS, MARTS, build_mart_assets
from finance_assets.marts.as_of import today_in
from finance_assets.marts.build import MartBuilder
from finance_assets.sandbox import Sandbox
from finance_assets.sandbox.data import (
    BREAKABLE_RULES,
    EDGE_AS_OF,
    EDGE_CURRENCIES,
    EDGE_DAYS_PAST_DUE,
)
from finance_assets_tests.harness import SYNC_OP, sandbox_api
from finance_assets_tests.marts_model import Books

SCALE = 0.05
OP = "build_finance_marts"
KEY_COLUMNS = {"ar_aging": 3, "ap_aging": 3, "cash_position": 3, "revenue_by_month": 3,
               "trial_balance": 2, "customer_balances": 2, "finance_kpis": 2}


def add_organization_column(database: Path) -> None:
    """Until the ingestion writes ``_organization`` (issue 13), the single-connection key."""
    with duckdb.connect(str(database)) as conn:
        tables = conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'finance' "
            "AND NOT starts_with(table_name, '_')").fetchall()  # fmt: skip
        for (table,) in tables:
            columns = {r[0] for r in conn.execute(f"DESCRIBE finance.{table}").fetchall()}
            if "_organization" not in columns:
                conn.execute(f"ALTER TABLE finance.{table} ADD COLUMN _organization VARCHAR "
                             "DEFAULT 'default'")


def build_marts(database: Path, as_of: dt.date | None = EDGE_AS_OF) -> dg.ExecuteInProcessResult:
    config = {"as_of": as_of.isoformat()} if as_of else {}
    return dg.materialize(
        [build_mart_assets()],
        resources={"duckdb": DuckDBResource(database=str(database))},
        run_config={"ops": {OP: {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def load(sb: Sandbox, database: Path, full_refresh: bool = False, last: bool = True) -> None:
    """The finance assets from the sandbox (in-memory run storage: quick); the last load
    adds the organization column."""
    result = dg.materialize(
        [build_finance_assets()],
        resources={
            "finance_api": sandbox_api(sb),
            "duckdb": DuckDBResource(database=str(database)),
        },
        run_config={"ops": {SYNC_OP: {"config": {"full_refresh": full_refresh}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success
    if last:
        add_organization_column(database)


def mart_rows(database: Path, name: str, as_of: dt.date = EDGE_AS_OF) -> dict[tuple, tuple]:
    mart = next(m for m in MARTS if m.name == name)
    where = f" WHERE as_of = DATE '{as_of}'" if mart.snapshot else ""
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute(f"SELECT * FROM {mart.table}{where}").fetchall()
    n = KEY_COLUMNS[name]
    out = {tuple(r[:n]): tuple(r[n:]) for r in rows}
    assert len(out) == len(rows), f"{name}: its grain is not unique"
    return out


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def books(make_module_sandbox, tmp_path_factory) -> tuple[Sandbox, Path, dg.ExecuteInProcessResult]:
    """The clean sandbox loaded, one open invoice then deleted and found gone by a full
    refresh (soft-deleted), and the marts built as of the edge cases' date."""
    sb = make_module_sandbox(scale=SCALE)
    database = tmp_path_factory.mktemp("marts") / "warehouse.duckdb"
    load(sb, database, last=False)
    gone = next(i for i in sb.records("invoices")
                if i["status"] == "sent" and i["balance"] != 0 and i["date"] < "2025-06-01")
    sb.mutate("invoices", delete_ids=[gone["id"]])
    load(sb, database, full_refresh=True)
    with duckdb.connect(str(database), read_only=True) as conn:
        deleted = conn.execute("SELECT count(*) FROM finance.invoices WHERE id = ? AND "
                               "_deleted_at IS NOT NULL", [gone["id"]]).fetchone()
    assert deleted == (1,)
    return sb, database, build_marts(database)


@pytest.mark.parametrize("name", [m.name for m in MARTS])
def test_every_mart_equals_the_python_computation(books, name: str) -> None:
    sb, database, result = books
    assert mart_rows(database, name) == Books(sb, EDGE_AS_OF).mart(name)


def test_the_edge_cases_are_in_the_data(books) -> None:
    """What the comparison above covers: every aging edge, negative balances, three
    currencies with 6-decimal rates, draft and void documents with a balance."""
    sb, database, _ = books
    invoices = sb.records("invoices")
    counted = [i for i in invoices if i["status"] not in ("draft", "void") and i["balance"]]
    late = {(EDGE_AS_OF - dt.date.fromisoformat(i["due_date"])).days for i in counted}
    assert set(EDGE_DAYS_PAST_DUE) <= late
    assert any(i["balance"] < 0 for i in counted)
    assert any(b["balance"] < 0 for b in sb.records("bills") if b["status"] != "void")
    rates = {i["currency_code"]: i["exchange_rate"] for i in counted}
    assert set(EDGE_CURRENCIES) <= set(rates)
    assert all(-rates[c].as_tuple().exponent == 6 for c in EDGE_CURRENCIES)
    assert {"draft", "void"} <= {i["status"] for i in invoices if i["balance"] != 0}
    aging = mart_rows(database, "ar_aging")
    assert len({r[-1] for r in aging.values()}) > 1 and all(len(r) == 7 for r in aging.values())


def test_checks_pass_on_clean_data_and_warnings_do_not_fail_the_run(books) -> None:
    _, _, result = books
    assert result.success
    checks = checks_of(result)
    assert set(checks) == {c.name for c in CHECKS}
    errors = [c.name for c in CHECKS if c.severity == "ERROR"]
    assert all(checks[n].passed for n in errors), [n for n in errors if not checks[n].passed]
    # The deleted invoice still counts in its contact's total: a WARN, the run succeeds.
    warned = checks["customer_balance_differences"]
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["violations"].value == 1
    # A payment applied to it now names an invoice that is gone: a WARN too.
    referential = checks["referential_integrity"]
    assert referential.severity == dg.AssetCheckSeverity.WARN
    assert all(p.endswith("is not in invoices")
               for p in referential.metadata["sample_problems"].value)


def test_materializations_carry_row_counts_and_schemas(books) -> None:
    _, database, result = books
    events = {e.asset_key.path[-1]: e for e in result.get_asset_materialization_events()}
    assert set(events) == {m.name for m in MARTS}
    for mart in MARTS:
        metadata = events[mart.name].materialization.metadata
        assert metadata["dagster/row_count"].value == len(mart_rows(database, mart.name))
        columns = [c.name for c in metadata["dagster/column_schema"].schema.columns]
        assert columns == [c.name for c in mart.columns]


def test_a_snapshot_rebuilt_replaces_its_date_only(books, tmp_path) -> None:
    sb, database, _ = books
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(database.read_bytes())
    before = mart_rows(copy, "ar_aging")
    later = EDGE_AS_OF + dt.timedelta(days=1)
    assert build_marts(copy, later).success and build_marts(copy, EDGE_AS_OF).success
    assert mart_rows(copy, "ar_aging") == before
    assert mart_rows(copy, "ar_aging", later) == Books(sb, later).mart("ar_aging")
    with duckdb.connect(str(copy), read_only=True) as conn:
        dates = conn.execute("SELECT DISTINCT as_of FROM marts.finance_kpis ORDER BY 1")
        assert [r[0] for r in dates.fetchall()] == [EDGE_AS_OF, later]


def test_as_of_defaults_to_today_in_the_organization_time_zone(books, tmp_path) -> None:
    """At noon UTC on the edge date, Kiritimati (UTC+14) is already on the next day."""
    sb, database, _ = books
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(database.read_bytes())
    noon = dt.datetime.combine(EDGE_AS_OF, dt.time(12), tzinfo=dt.timezone.utc)
    next_day = EDGE_AS_OF + dt.timedelta(days=1)
    assert today_in("Pacific/Kiritimati", noon) == next_day
    assert today_in("America/New_York", noon) == EDGE_AS_OF
    with duckdb.connect(str(copy)) as conn:
        conn.execute("UPDATE finance.organizations SET time_zone = 'Pacific/Kiritimati'")
        builder = MartBuilder(conn, None, noon)
        assert [d.as_of for d in builder.dates] == [next_day]
        ar_aging = next(m for m in MARTS if m.name == "ar_aging")
        builder.build(ar_aging)
    assert mart_rows(copy, "ar_aging", next_day) == Books(sb, next_day).mart("ar_aging")


def test_integrity_checks_fail_on_a_tampered_mart(books, tmp_path) -> None:
    _, database, _ = books
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(database.read_bytes())
    by_name = {c.name: c for c in CHECKS}
    with duckdb.connect(str(copy)) as conn:
        builder = MartBuilder(conn, EDGE_AS_OF, dt.datetime.now(dt.timezone.utc))
        for table, column, check in (
            ("ar_aging", "days_31_60", "ar_aging_reconciles"),
            ("ap_aging", "total", "ap_aging_reconciles"),
            ("trial_balance", "debit", "trial_balance_nets_to_zero"),
        ):
            assert builder.check(by_name[check]).count == 0
            conn.execute(f"UPDATE marts.{table} SET {column} = {column} + 0.01 WHERE rowid = 0")
            assert builder.check(by_name[check]).count >= 1, check


def test_each_error_check_fails_on_the_records_that_break_its_rule(
    make_module_sandbox, tmp_path
) -> None:
    sb = make_module_sandbox(scale=SCALE, broken_rules=BREAKABLE_RULES)
    database = tmp_path / "broken.duckdb"
    load(sb, database)
    result = build_marts(database)
    assert not result.success  # blocking ERROR checks failed
    checks = checks_of(result)
    for rule, records in sb.broken_records.items():
        assert not checks[rule].passed, rule
        assert checks[rule].metadata["sample_records"].value == records, rule
    # An unbalanced journal also unbalances the trial balance; the aging still reconciles.
    assert not checks["trial_balance_nets_to_zero"].passed
    assert checks["ar_aging_reconciles"].passed and checks["ap_aging_reconciles"].passed
