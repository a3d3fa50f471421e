"""Real materializations of the sixteen assets against the sandbox, compared with its data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from finance_assets.assets import asset_key, build_finance_assets, load_order
from finance_assets.checks import check_specs
from finance_assets.endpoints import BY_NAME, ENDPOINTS, Endpoint
from finance_assets.sandbox import Sandbox
from finance_assets.schema import table_name
from finance_assets.warehouse import Warehouse
from finance_assets_tests.harness import (
    assert_warehouse_equals_sandbox,
    expected_rows,
    materialize,
    non_nullable,
    sandbox_api,
    shipped_definitions,
    snapshot,
    tables_of,
)

SCALE = 0.1
CHECKS_PER_ASSET = len(check_specs(ENDPOINTS[0], asset_key(ENDPOINTS[0])))
# The shipped definitions add Dagster's column schema change check to every asset.
SHIPPED_CHECKS_PER_ASSET = CHECKS_PER_ASSET + 1


@pytest.fixture(scope="module")
def loaded(
    make_module_sandbox, tmp_path_factory
) -> tuple[Sandbox, Path, dg.ExecuteInProcessResult]:
    sb = make_module_sandbox(scale=SCALE)
    database = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    result = materialize(sb, database)
    return sb, database, result


def test_all_sixteen_assets_and_checks_succeed_with_one_token(loaded) -> None:
    sb, _, result = loaded
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {asset_key(e) for e in ENDPOINTS}
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == CHECKS_PER_ASSET * len(ENDPOINTS)
    assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]
    assert sb.stats()["tokens_issued"] == 1


def test_warehouse_equals_sandbox_data(loaded) -> None:
    sb, database, _ = loaded
    assert_warehouse_equals_sandbox(sb, database)


def test_extreme_and_extra_values_are_exact(loaded) -> None:
    sb, database, _ = loaded
    with duckdb.connect(str(database), read_only=True) as conn:
        for endpoint in ENDPOINTS:
            for record in sb.records(endpoint.name):
                extras = set(record) - set(endpoint.model.model_fields)
                if extras:
                    row = conn.execute(
                        f"select _extra from finance.{endpoint.name} where id = ?", [record["id"]]
                    ).fetchone()
                    assert row[0] is not None and all(k in row[0] for k in extras)
        big = conn.execute("select max(abs(total)) from finance.invoices").fetchone()[0]
    want = max(abs(r["total"]) for r in sb.records("invoices") if r["total"] is not None)
    assert big == want


def test_materialization_metadata(loaded) -> None:
    sb, _, result = loaded
    by_key = {
        e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    meta = by_key[dg.AssetKey("invoices")]
    assert meta["dagster/row_count"].value == len(sb.records("invoices"))
    assert meta["records_fetched"].value == len(sb.records("invoices"))
    assert meta["pages"].value >= 1 and meta["requests"].value >= meta["pages"].value
    assert meta["dagster/table_name"].value == "finance.invoices"
    columns = {c.name: c for c in meta["dagster/column_schema"].schema.columns}
    assert columns["total"].type == "DECIMAL(18,2)"
    assert not columns["total"].constraints.nullable
    assert columns["notes"].constraints.nullable


def test_second_run_changes_nothing_then_updates_land(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    assert materialize(sb, database).success
    first = snapshot(database)
    assert materialize(sb, database).success
    assert snapshot(database) == first

    for name in ("invoices", "bills", "journals", "customer_payments", "contacts"):
        sb.mutate(name, updates=3, inserts=2, change_children=True)
    assert materialize(sb, database).success
    assert_warehouse_equals_sandbox(sb, database)
    assert snapshot(database) != first


def test_null_violations_fail_the_nullability_checks_and_load(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05, null_violations=20)  # every non-nullable field, arrays too
    database = tmp_path / "w.duckdb"
    result = materialize(sb, database)
    assert len(result.get_asset_materialization_events()) == len(ENDPOINTS)
    assert_warehouse_equals_sandbox(sb, database)  # every record loaded as it came
    evaluations = {
        (e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()
    }
    for endpoint in ENDPOINTS:
        want = 0
        for _, model, field in tables_of(endpoint):
            for row in expected_rows(sb, endpoint, field):
                want += sum(1 for c in non_nullable(model) if c in row and row[c] is None)
        check = evaluations[(endpoint.name, "nullability")]
        assert check.passed is (want == 0), endpoint.name
        assert check.metadata["null_values"].value == want, endpoint.name
        assert evaluations[(endpoint.name, "primary_key")].passed


def test_one_asset_alone(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    result = materialize(sb, database, selection=["invoices"])
    assert result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [
        dg.AssetKey("invoices")
    ]
    assert {e.check_name for e in result.get_asset_check_evaluations()} == {
        "nullability",
        "primary_key",
        "quarantine",
        "undocumented_fields",
    }
    assert set(sb.stats()["requests"]) <= {"/v1/invoices", "/oauth/v2/token"}


def test_a_failing_endpoint_names_itself_and_others_land(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    broken = Endpoint(
        "invoices", "/v1/invoices_gone", "invoices", BY_NAME["invoices"].model, "broken"
    )
    endpoints = [broken if e.name == "invoices" else e for e in ENDPOINTS]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [build_finance_assets(endpoints)],
            resources={
                "finance_api": sandbox_api(sb),
                "duckdb": DuckDBResource(database=str(database)),
            },
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    landed = {e.asset_key for e in result.get_asset_materialization_events()}
    assert landed == {asset_key(e) for e in ENDPOINTS} - {dg.AssetKey("invoices")}
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "invoices" in failure.message and "404" in failure.message
    with duckdb.connect(str(database), read_only=True) as conn:
        assert conn.execute("select count(*) from finance.bills").fetchone()[0] > 0


def _daily_job() -> dg.JobDefinition:
    """The shipped job (with the shipped executor), rebuilt from the environment."""
    return shipped_definitions().resolve_job_def("finance_daily")


def test_daily_job_as_shipped(make_sandbox, tmp_path, monkeypatch) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    env = {
        "FINANCE_API_BASE_URL": sb.base_url,
        "FINANCE_API_TOKEN_URL": sb.token_url,
        "FINANCE_API_CLIENT_ID": sb.client_id,
        "FINANCE_API_CLIENT_SECRET": sb.client_secret,
        "FINANCE_API_REFRESH_TOKEN": sb.refresh_token,
        "FINANCE_DUCKDB_PATH": str(database),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(_daily_job), instance=instance)
        assert result.success
        materialized = {e.asset_key for e in result.get_asset_materialization_events()}
        assert materialized == {asset_key(e) for e in ENDPOINTS}
        checks = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert len(checks) == SHIPPED_CHECKS_PER_ASSET * len(ENDPOINTS)
        assert all(c.passed for c in checks)
        assert result.dagster_run.run_config == {}  # the job needs no run config
    assert sb.stats()["tokens_issued"] == 1
    assert_warehouse_equals_sandbox(sb, database)


def test_definitions_load_with_assets_checks_and_schedule() -> None:
    defs = shipped_definitions()
    graph = defs.resolve_asset_graph()
    finance = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "finance"}
    assert {k.path[-1] for k in finance} == {e.name for e in ENDPOINTS}
    finance_checks = [k for k in graph.asset_check_keys if k.asset_key in finance]
    assert len(finance_checks) == SHIPPED_CHECKS_PER_ASSET * len(ENDPOINTS)
    for endpoint in ENDPOINTS:  # late after a day and two hours, stale after two days
        policy = graph.get(asset_key(endpoint)).freshness_policy
        assert policy == dg.FreshnessPolicy.time_window(
            fail_window=dt.timedelta(hours=50), warn_window=dt.timedelta(hours=26)
        )
    # One step: it runs in the run's process (no step subprocess to start).
    assert defs.resolve_job_def("finance_daily").executor_def.name == "in_process"
    schedule = defs.resolve_schedule_def("finance_daily_schedule")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.job_name == "finance_daily"
    for endpoint in ENDPOINTS:
        spec = graph.get(asset_key(endpoint))
        assert spec.group_name == "finance" and spec.kinds >= {"duckdb"}
        assert spec.metadata["dagster/table_name"] == f"finance.{endpoint.name}"


def test_load_order_starts_the_largest_first(tmp_path) -> None:
    """A first load goes by the high-volume hint; later runs by the rows held."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        wh = Warehouse(conn)
        first = load_order(wh, ENDPOINTS)
        hinted = [e.name for e in ENDPOINTS if e.high_volume]
        assert [e.name for e in first[: len(hinted)]] == hinted
        assert sorted(e.name for e in first) == sorted(e.name for e in ENDPOINTS)
        for endpoint in ENDPOINTS:
            wh.ensure_tables(endpoint)
        for name, rows in (("items", 30), ("contacts", 50), ("invoices", 10)):
            table = table_name(BY_NAME[name])
            conn.execute(f"INSERT INTO {table} (id) SELECT range FROM range({rows})")
        later = [e.name for e in load_order(wh, ENDPOINTS)]
        assert later[:3] == ["contacts", "items", "invoices"]
        assert later[3:6] == [n for n in hinted if n != "invoices"][:3]
