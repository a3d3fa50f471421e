"""What a data team watches: checks that block what is downstream, undocumented fields the
API starts to send, column types that change, and freshness windows that match the
schedules. Real sandbox, real DuckDB files, real Dagster runs."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from finance_assets.assets import asset_key, build_finance_assets
from finance_assets.checks import UNDOCUMENTED_FIELDS, column_schema
from finance_assets.components import FinanceApiIngestion
from finance_assets.endpoints import BY_NAME
from finance_assets_tests.harness import SCALE, api_for

INVOICES = BY_NAME["invoices"]


@dg.asset(deps=[asset_key(INVOICES)])
def receivables_report() -> dg.MaterializeResult:
    """Stands in for the finance marts: anything built on the invoices."""
    return dg.MaterializeResult(metadata={"built": True})


def materialize(sb, database, instance, *extra) -> dg.ExecuteInProcessResult:  # noqa: ANN001
    return dg.materialize(
        [build_finance_assets(), *extra],
        selection=["invoices", *(a.key.to_user_string() for a in extra)],
        resources={"finance_api": api_for(sb), "duckdb": DuckDBResource(database=str(database))},
        instance=instance,
        raise_on_error=False,
    )


def test_a_failing_blocking_check_stops_what_is_downstream(make_sandbox, tmp_path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    clean = make_sandbox(scale=SCALE)
    built = materialize(clean, tmp_path / "clean.duckdb", instance, receivables_report)
    assert built.success
    assert receivables_report.key in {e.asset_key for e in built.get_asset_materialization_events()}

    broken = make_sandbox(scale=SCALE, null_violations=3)
    result = materialize(broken, tmp_path / "broken.duckdb", instance, receivables_report)
    assert not result.success
    landed = {e.asset_key for e in result.get_asset_materialization_events()}
    assert asset_key(INVOICES) in landed  # loaded as it came, so the check can name the rows
    assert receivables_report.key not in landed  # but nothing is built on it
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert {(e.check_name, e.severity) for e in failed} == {
        ("nullability", dg.AssetCheckSeverity.ERROR)
    }
    assert all(e.blocking for e in failed)


def test_undocumented_fields_the_api_starts_to_send_warn_once(make_sandbox, tmp_path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    sb = make_sandbox(scale=SCALE)
    database = tmp_path / "w.duckdb"

    def check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
        (evaluation,) = [
            e for e in result.get_asset_check_evaluations() if e.check_name == UNDOCUMENTED_FIELDS
        ]
        return evaluation

    first = check(materialize(sb, database, instance))
    assert first.passed  # the first load is the baseline, whatever the API sends
    baseline = {(f["table"], f["field"]) for f in first.metadata["fields"].value}

    changed = sb.mutate("invoices", updates=3, undocumented={"cf_project": "P-7"})["updated"]
    second_run = materialize(sb, database, instance)
    assert second_run.success  # a warning does not fail the run nor block anything
    second = check(second_run)
    assert not second.passed and second.severity == dg.AssetCheckSeverity.WARN
    assert "finance.invoices.cf_project (3 records)" in second.description
    fields = {(f["table"], f["field"]): f for f in second.metadata["fields"].value}
    assert set(fields) == baseline | {("finance.invoices", "cf_project")}
    started = fields[("finance.invoices", "cf_project")]
    assert started["records"] == 3 and started["new"]
    with duckdb.connect(str(database), read_only=True) as conn:
        (loaded_at,) = conn.execute(
            "select distinct _loaded_at from finance.invoices where id in (?, ?, ?)", changed
        ).fetchone()
    assert dt.datetime.fromisoformat(started["first_seen"]) == loaded_at

    third = check(materialize(sb, database, instance))
    assert third.passed  # known now; still listed
    assert ("finance.invoices", "cf_project") in {
        (f["table"], f["field"]) for f in third.metadata["fields"].value
    }


def test_a_changed_column_type_is_reported(make_sandbox, tmp_path) -> None:
    """The shipped schema-change check compares the two latest materializations, as after
    an upgrade that retypes a column."""
    instance = dg.DagsterInstance.ephemeral()
    sb = make_sandbox(scale=SCALE)
    assert materialize(sb, tmp_path / "w.duckdb", instance).success
    columns = [
        dg.TableColumn(c.name, "VARCHAR" if c.name == "total" else c.type)
        for c in column_schema(INVOICES).columns
    ]

    @dg.asset(key=asset_key(INVOICES))
    def retyped() -> dg.MaterializeResult:
        return dg.MaterializeResult(
            metadata={"dagster/column_schema": dg.TableSchema(columns=columns)}
        )

    assert dg.materialize([retyped], instance=instance).success
    shipped = dg.component_defs(component=FinanceApiIngestion())
    (schema_checks,) = [
        c for c in shipped.asset_checks or [] if isinstance(c, dg.AssetChecksDefinition)
    ]
    result = dg.materialize(
        [schema_checks, retyped.to_source_asset()],
        instance=instance,
        selection=dg.AssetSelection.checks_for_assets(asset_key(INVOICES)),
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "column_schema_change" and not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "total: DECIMAL(18,2) -> VARCHAR" in str(evaluation.description)


def test_freshness_matches_the_schedule_and_is_set_in_yaml() -> None:
    def policy(component: FinanceApiIngestion) -> dg.FreshnessPolicy | None:
        defs = dg.component_defs(component=component)
        return defs.resolve_asset_graph().get(asset_key(INVOICES)).freshness_policy

    assert policy(FinanceApiIngestion()) == dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=50), warn_window=dt.timedelta(hours=26)
    )
    hourly = FinanceApiIngestion.resolve_from_yaml(
        'schedules:\n  incremental_cron: "0 * * * *"\n  late_after_hours: 2\n'
        "  stale_after_hours: 5\n"
    )
    assert policy(hourly) == dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=5), warn_window=dt.timedelta(hours=2)
    )
