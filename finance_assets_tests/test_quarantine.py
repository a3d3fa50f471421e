"""Records the schema cannot hold land in ``finance._rejected``; the valid ones load; a check fails.

The sandbox breaks K records per resource for real (``bad_records``): a
non-numeric amount, an unparseable date or a wrong type, in turn.
"""

from __future__ import annotations

import json

import duckdb

from finance_assets.endpoints import ENDPOINTS
from finance_assets.sandbox.data import BAD_VALUES
from finance_assets_tests.harness import SCALE, api_for, run

K = 2


def test_bad_records_are_quarantined_valid_ones_load_and_the_check_fails(
    make_sandbox, tmp_path
) -> None:
    sb = make_sandbox(scale=SCALE, bad_records=K)
    database = tmp_path / "w.duckdb"
    result = run(api_for(sb), database)
    assert len(result.get_asset_materialization_events()) == len(ENDPOINTS)
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    with duckdb.connect(str(database), read_only=True) as conn:
        for endpoint in ENDPOINTS:
            records = sb.records(endpoint.name)
            bad = {r["id"]: r for r in records if any(v in BAD_VALUES.values() for v in r.values())}
            assert len(bad) == min(K, len(records)), endpoint.name
            rows = conn.execute(
                "select id, raw, reason, _loaded_at from finance._rejected where resource = ?",
                [endpoint.name],
            ).fetchall()
            assert {r[0] for r in rows} == set(bad), endpoint.name
            for record_id, raw, reason, loaded_at in rows:
                sent = json.loads(raw)
                assert sent["id"] == record_id and loaded_at is not None
                broken = [k for k, v in sent.items() if v in BAD_VALUES.values()]
                assert broken and broken[0] in reason, reason  # the reason names the field
            loaded = {
                r[0] for r in conn.execute(f"select id from finance.{endpoint.name}").fetchall()
            }
            assert loaded == {r["id"] for r in records} - set(bad), endpoint.name

            check = checks[(endpoint.name, "quarantine")]
            assert not check.passed and check.severity.value == "ERROR"
            assert f"{len(bad)} {endpoint.name} record(s)" in check.description
            assert check.metadata["quarantined"].value == len(bad)
            assert set(check.metadata["sample_ids"].value) == set(bad)
            assert all(check.metadata["sample_reasons"].value)
            assert checks[(endpoint.name, "nullability")].passed
            assert checks[(endpoint.name, "primary_key")].passed


def test_clean_data_passes_the_quarantine_check(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=SCALE)
    result = run(api_for(sb), tmp_path / "w.duckdb", ["invoices"])
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine"]
    assert check.passed and check.metadata["quarantined"].value == 0


def test_decimals_past_their_column_are_quarantined_with_the_reason(
    make_sandbox, tmp_path
) -> None:
    """The fast path leaves digits/places to Arrow; a refused page is validated again in full."""
    from decimal import Decimal

    sb = make_sandbox(scale=SCALE)
    table = sb.tables["invoices"]
    records = sb.records("invoices")
    broken = {  # id -> (field it breaks, what the reason says)
        records[0]["id"]: ("total", "decimal places"),
        records[1]["id"]: ("balance", "digits"),
        records[2]["id"]: ("line_items", "decimal places"),
    }
    live = [table.find(record_id) for record_id in broken]
    live[0]["total"] = Decimal("10.125")  # 3 places into DECIMAL(18,2)
    live[1]["balance"] = Decimal("12345678901234567.89")  # 19 digits into DECIMAL(18,2)
    live[2]["line_items"][0]["quantity"] = Decimal("0.0000001")  # 7 places into (18,6)
    for record in live:
        table.refresh(record)

    database = tmp_path / "w.duckdb"
    result = run(api_for(sb), database, ["invoices"])
    with duckdb.connect(str(database), read_only=True) as conn:
        rejected = dict(
            conn.execute(
                "select id, reason from finance._rejected where resource = 'invoices'"
            ).fetchall()
        )
        loaded = {r[0] for r in conn.execute("select id from finance.invoices").fetchall()}
    assert set(rejected) == set(broken)
    for record_id, (field, says) in broken.items():
        assert field in rejected[record_id] and says in rejected[record_id], rejected[record_id]
    assert loaded == {r["id"] for r in records} - set(broken)  # the rest of each page loaded
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "quarantine")
    assert not check.passed and check.metadata["quarantined"].value == 3
