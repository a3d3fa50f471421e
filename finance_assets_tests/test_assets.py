"""Real materializations of the sixteen assets against the sandbox, compared with its data."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from finance_assets.assets import asset_key, build_finance_assets, load_order
from finance_assets.checks import check_specs
from finance_assets.endpoints import BY_NAME, ENDPOINTS, Endpoint
from finance_assets.models import DecimalType
from finance_assets.resources import FinanceApiResource
from finance_assets.sandbox import Sandbox
from finance_assets.schema import table_name
from finance_assets.warehouse import Warehouse

SCALE = 0.1
CHECKS_PER_ASSET = len(check_specs(ENDPOINTS[0], asset_key(ENDPOINTS[0])))


def api_for(sb: Sandbox, **kwargs) -> FinanceApiResource:
    return FinanceApiResource(
        base_url=sb.base_url,
        token_url=sb.token_url,
        client_id=sb.client_id,
        client_secret=sb.client_secret,
        refresh_token=sb.refresh_token,
        **kwargs,
    )


def materialize(
    sb: Sandbox,
    database: Path,
    selection: list[str] | None = None,
    full_refresh: bool = False,
    margin: float | None = None,
    **api_settings,
) -> dg.ExecuteInProcessResult:
    """One real materialization; ``full_refresh``/``margin`` are the run config."""
    config: dict = {"full_refresh": full_refresh}
    if margin is not None:
        config["cursor_margin_seconds"] = margin
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [build_finance_assets()],
            selection=selection,
            resources={
                "finance_api": api_for(sb, **api_settings),
                "duckdb": DuckDBResource(database=str(database)),
            },
            run_config={"ops": {"finance_api": {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )


def decimal_fields(model) -> list[str]:
    return [
        name
        for name, info in model.model_fields.items()
        if any(isinstance(m, DecimalType) for m in info.metadata)
    ]


def non_nullable(model) -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        args = getattr(info.annotation, "__args__", ())
        if type(None) not in args:
            out.append(name)
    return out


def tables_of(endpoint: Endpoint) -> Iterator[tuple[str, type, str | None]]:
    """(table, model, nested field or None) for the parent and each child table."""
    yield f"finance.{endpoint.name}", endpoint.model, None
    for field, model in endpoint.children.items():
        yield f"finance.{endpoint.name}__{field}", model, field


def expected_rows(sb: Sandbox, endpoint: Endpoint, field: str | None) -> list[dict]:
    records = sb.records(endpoint.name)
    if field is None:
        return records
    return [dict(item, parent_id=r["id"]) for r in records for item in (r[field] or [])]


def live_rows(endpoint: Endpoint, table: str, field: str | None) -> str:
    """SQL for the rows of records that still exist (soft-deleted ones stay in the table)."""
    parent = f"finance.{endpoint.name}"
    if field is None:
        return f"(select * from {parent} where _deleted_at is null)"
    return (
        f"(select * from {table} where parent_id in "
        f"(select id from {parent} where _deleted_at is null))"
    )


def assert_warehouse_equals_sandbox(sb: Sandbox, database: Path) -> None:
    """Live rows equal the sandbox's data: counts, ids, exact money sums, null counts."""
    with duckdb.connect(str(database), read_only=True) as conn:
        for endpoint in ENDPOINTS:
            for table, model, field in tables_of(endpoint):
                rows = expected_rows(sb, endpoint, field)
                live = live_rows(endpoint, table, field)
                got = conn.execute(f"select count(*) from {live}").fetchone()[0]
                assert got == len(rows), table
                for column in decimal_fields(model):
                    want = sum((r[column] for r in rows if r[column] is not None), Decimal(0))
                    total = conn.execute(f"select coalesce(sum({column}), 0) from {live}")
                    assert Decimal(total.fetchone()[0]) == want, f"{table}.{column}"
                for column in model.model_fields:
                    if column in endpoint.children:
                        continue
                    want_nulls = sum(1 for r in rows if r.get(column) is None)
                    nulls = conn.execute(f"select count(*) from {live} where {column} is null")
                    assert nulls.fetchone()[0] == want_nulls, f"{table}.{column} nulls"
            live = live_rows(endpoint, "", None)
            ids = {r[0] for r in conn.execute(f"select id from {live}").fetchall()}
            assert ids == {r["id"] for r in sb.records(endpoint.name)}, endpoint.name


def snapshot(database: Path) -> dict[str, list]:
    """Every data table's rows except the load time, for 'nothing changed' comparisons."""
    out = {}
    with duckdb.connect(str(database), read_only=True) as conn:
        tables = conn.execute(
            "select table_name from information_schema.tables where table_schema = 'finance' "
            "and table_name not like '\\_%' escape '\\'"  # data tables, not bookkeeping
        ).fetchall()
        for (table,) in tables:
            described = conn.execute(f"select * from finance.{table} limit 0").description
            columns = [d[0] for d in described if d[0] != "_loaded_at"]
            select = ", ".join(f'"{c}"' for c in columns)
            out[table] = conn.execute(
                f"select {select} from finance.{table} order by all"
            ).fetchall()
    return out


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
                "finance_api": api_for(sb),
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
    from finance_assets.definitions import build_defs

    return build_defs().resolve_job_def("finance_daily")


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
        assert len(checks) == CHECKS_PER_ASSET * len(ENDPOINTS) and all(c.passed for c in checks)
        assert result.dagster_run.run_config == {}  # the job needs no run config
    assert sb.stats()["tokens_issued"] == 1
    assert_warehouse_equals_sandbox(sb, database)


def test_definitions_load_with_assets_checks_and_schedule() -> None:
    from finance_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assert {k.path[-1] for k in graph.get_all_asset_keys()} == {e.name for e in ENDPOINTS}
    assert len(graph.asset_check_keys) == CHECKS_PER_ASSET * len(ENDPOINTS)
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
