"""One factory over the mart list: the marts as one subsettable multi-asset downstream of
the finance assets they read, with their checks, rebuilt by automation after a sync.

One op builds every selected mart so a run has one as-of date and one writer of the
DuckDB file; marts are built in list order, then the selected checks run.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from finance_assets.assets import IngestionNames
from finance_assets.endpoints import BY_NAME as ENDPOINTS
from finance_assets.marts.build import MartBuilder, Violations, sql_file
from finance_assets.marts.catalog import CHECKS, MARTS, Mart, MartCheck
from finance_assets.warehouse import WarehouseBusyError, locked_connection
from finance_assets.warehouse.memory import bound_memory

LOCK_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class MartNames:
    """The Dagster names of one ingestion's marts."""

    ingestion: IngestionNames
    group: str
    op: str
    job: str
    automation_sensor: str

    def asset_key(self, mart: Mart) -> dg.AssetKey:
        return dg.AssetKey([*self.ingestion.asset_key_prefix, mart.name])


def mart_names(ingestion: IngestionNames) -> MartNames:
    group = f"{ingestion.group}_marts"
    return MartNames(ingestion, group, f"build_{group}", group, f"{group}_automation")


class MartsConfig(dg.Config):
    """Run config of the marts (set it in the launchpad or a backfill's job)."""

    as_of: str | None = Field(
        default=None,
        description="As-of date, YYYY-MM-DD; unset: today in each organization's time zone.",
    )

    memory_limit_mb: int = Field(
        default=0,
        ge=0,
        description="DuckDB's memory for the build, in MiB; the rest spills to disk next to "
        "the warehouse. 0 (default): DuckDB's own (80% of the machine's memory): the "
        "referential integrity check does not fit in 256 MiB at a million records.",
    )

    def date(self) -> dt.date | None:
        return dt.date.fromisoformat(self.as_of) if self.as_of else None


# Eager, with two changes for the finance assets partitioned by organization (the marts
# are not partitioned: they read every organization's rows). Dagster's conditions see an
# unpartitioned child of partitioned deps through any one partition of each dep:
# - eager()'s any_deps_missing holds while any organization's partition is missing, so the
#   marts would wait for every declared organization's first sync; here a dep is missing
#   only while no organization has landed it;
# - all_deps_blocking_checks_passed() holds once any one organization's partition passed,
#   even while another's latest blocking check fails; here every partition that has
#   landed must have passed its blocking checks (on its latest materialization).
# With one connection (nothing partitioned) both say what Dagster's own conditions say.
ALL_DEPS_LANDED = dg.AutomationCondition.all_deps_match(
    ~dg.AutomationCondition.missing()
).with_label("all_deps_landed")
LANDED_UNCHECKED = dg.AutomationCondition.any_deps_match(
    ~dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.all_checks_match(
        dg.AutomationCondition.check_passed(), blocking_only=True
    )
).with_label("any_deps_landed_without_passing_blocking_checks")
AUTOMATION = (
    dg.AutomationCondition.eager().replace(
        "any_deps_missing", (~ALL_DEPS_LANDED).with_label("any_deps_never_landed")
    )
    & ~LANDED_UNCHECKED
).with_label("eager, once every landed upstream passed its blocking checks")


def _column_schema(mart: Mart) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.sql_type, c.description) for c in mart.columns]
    )


def _spec(mart: Mart, names: MartNames) -> dg.AssetSpec:
    kind = "snapshot per as-of date" if mart.snapshot else "rebuilt whole"
    return dg.AssetSpec(
        key=names.asset_key(mart),
        description=f"{mart.description} Grain: {mart.grain} ({kind}). SQL: "
        f"`{sql_file(mart.name)}`, into `{mart.table}`.",
        group_name=names.group,
        deps=[names.ingestion.asset_key(ENDPOINTS[r]) for r in mart.reads],
        kinds={"duckdb", "sql"},
        tags={"domain": "finance"},
        metadata={
            "dagster/table_name": mart.table,
            "dagster/column_schema": _column_schema(mart),
            "grain": mart.grain,
            "snapshot": mart.snapshot,
            "sql": sql_file(mart.name),
        },
        automation_condition=AUTOMATION,
        skippable=True,
    )


def _check_spec(check: MartCheck, names: MartNames) -> dg.AssetCheckSpec:
    blocking = check.severity == "ERROR"
    return dg.AssetCheckSpec(
        check.name,
        asset=names.asset_key(next(m for m in MARTS if m.name == check.mart)),
        description=f"{check.severity}. {check.description} SQL: "
        f"`{sql_file('checks/' + check.name)}`.",
        blocking=blocking,
    )


def _result(check: MartCheck, key: dg.AssetKey, found: Violations) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if check.severity == "ERROR" else (
        dg.AssetCheckSeverity.WARN)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=check.name,
        passed=found.count == 0,
        severity=severity,
        description=check.description if found.count == 0 else (
            f"{found.count} violations, e.g. {found.samples[0][1]}: {found.samples[0][2]}"),
        metadata={
            "violations": dg.MetadataValue.int(found.count),
            "sample_records": dg.MetadataValue.json([s[1] for s in found.samples]),
            "sample_problems": dg.MetadataValue.json(
                [f"{o}: {r}: {p}" for o, r, p in found.samples]),
        },
    )  # fmt: skip


def build_mart_assets(ingestion: IngestionNames = IngestionNames()) -> dg.AssetsDefinition:  # noqa: B008 - frozen
    """The marts over ``MARTS`` reading the tables of ``ingestion``'s DuckDB resource."""
    names = mart_names(ingestion)
    keys = {names.asset_key(m): m for m in MARTS}

    @dg.multi_asset(
        name=names.op,
        specs=[_spec(m, names) for m in MARTS],
        check_specs=[_check_spec(c, names) for c in CHECKS],
        can_subset=True,
        pool=ingestion.pool,
        required_resource_keys={ingestion.warehouse_resource},
        description="Builds the selected finance marts with SQL in the warehouse, then "
        "runs their checks.",
    )
    def build_marts(
        context: dg.AssetExecutionContext, config: MartsConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        duckdb: DuckDBResource = getattr(context.resources, ingestion.warehouse_resource)
        selected = [m for k, m in keys.items() if k in context.selected_asset_keys]
        wanted = context.selected_asset_check_keys
        now = dt.datetime.now(dt.timezone.utc)
        with ExitStack() as opened:
            try:
                conn = opened.enter_context(locked_connection(
                    duckdb.database, LOCK_TIMEOUT_SECONDS, config=duckdb.connection_config
                ))  # fmt: skip
            except WarehouseBusyError as exc:
                raise dg.Failure(description=str(exc)) from None
            bound_memory(conn, config.memory_limit_mb)
            builder = MartBuilder(conn, config.date(), now)
            dates = ", ".join(f"{d.organization} {d.as_of}" for d in builder.dates)
            context.log.info(f"Building {len(selected)} marts in {duckdb.database} as of {dates}.")
            for mart in selected:
                rows = builder.build(mart)
                yield dg.MaterializeResult(
                    asset_key=names.asset_key(mart),
                    metadata={
                        "dagster/row_count": dg.MetadataValue.int(rows),
                        "dagster/column_schema": _column_schema(mart),
                        "dagster/table_name": mart.table,
                        "as_of": dg.MetadataValue.json(
                            {d.organization: d.as_of.isoformat() for d in builder.dates}),
                    },
                )  # fmt: skip
            for check in CHECKS:
                key = names.asset_key(next(m for m in MARTS if m.name == check.mart))
                if dg.AssetCheckKey(key, check.name) in wanted:
                    yield _result(check, key, builder.check(check))

    return build_marts
