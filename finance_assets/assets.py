"""One factory over the endpoint list: sixteen subsettable assets in one multi-asset.

One op serves every selected endpoint of one organization, so a run mints one access
token (providers cap token mints). Endpoints are fetched concurrently (bounded) and
staged in the run's own DuckDB file; each is then merged in its own transaction in a
short window with the warehouse attached, so runs of other organizations write the same
file in turns. One failing endpoint does not keep the others from landing, and the run
then fails naming it.
"""

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb as duckdb_
from dagster_duckdb import DuckDBResource
from pydantic import Field

from finance_assets import checks
from finance_assets.api import AuthError, FinanceApiError
from finance_assets.endpoints import ENDPOINTS, Endpoint
from finance_assets.records import columnar
from finance_assets.resources import FinanceApiResource
from finance_assets.schema import DEFAULT_ORGANIZATION, table_name
from finance_assets.sync import DEFAULT_MARGIN, LoadReport, load_endpoint
from finance_assets.warehouse import (
    AttachedWarehouse,
    OwnDatabase,
    SourceMismatch,
    Warehouse,
    WarehouseAccess,
    WarehouseBusyError,
    check_source,
    record_source,
    run_database,
)
from finance_assets.warehouse.memory import DEFAULT_MEMORY_LIMIT_MB, bound_memory

SOURCE_TAG = "finance/source"  # the run tag naming what a run reads
ORGANIZATION_TAG = "finance/organization"  # the run tag naming whose books a run reads


@dataclass(frozen=True)
class IngestionNames:
    """The Dagster names of one ingestion: its assets, op, resources, pool, jobs, schedules.

    The default instance keeps the names deployments and automation already use; any
    other instance's names all derive from its own name, so two can load side by side.
    """

    asset_key_prefix: tuple[str, ...] = ()
    group: str = "finance"
    sync_op: str = "sync_finance_records"
    api_resource: str = "finance_api"
    warehouse_resource: str = "duckdb"
    pool: str = "finance_duckdb"
    incremental_job: str = "finance_daily"
    full_refresh_job: str = "full_refresh"
    incremental_schedule: str = "finance_daily_schedule"
    full_refresh_schedule: str = "finance_weekly_full_refresh_schedule"
    failure_sensor: str = "finance_run_failure_sensor"

    @classmethod
    def for_instance(cls, name: str) -> "IngestionNames":
        if name == cls.group:
            return cls()
        return cls(
            asset_key_prefix=(name,),
            group=name,
            sync_op=f"sync_{name}_records",
            api_resource=f"{name}_api",
            warehouse_resource=f"{name}_duckdb",
            pool=f"{name}_duckdb",
            incremental_job=f"{name}_daily",
            full_refresh_job=f"{name}_full_refresh",
            incremental_schedule=f"{name}_daily_schedule",
            full_refresh_schedule=f"{name}_weekly_full_refresh_schedule",
            failure_sensor=f"{name}_run_failure_sensor",
        )

    def asset_key(self, endpoint: Endpoint) -> dg.AssetKey:
        return dg.AssetKey([*self.asset_key_prefix, endpoint.name])


DEFAULT_NAMES = IngestionNames()


def asset_key(endpoint: Endpoint) -> dg.AssetKey:
    """The endpoint's asset key in the default instance."""
    return DEFAULT_NAMES.asset_key(endpoint)


class SyncDefaults(dg.Model, dg.Resolvable):
    """A deployment's run settings (``sync:`` in defs.yaml); a run's config
    (``SyncConfig``) may override each."""

    model_config = {"frozen": True}

    parallel_endpoints: int = Field(default=4, ge=1, le=16)
    cursor_margin_seconds: float = Field(default=DEFAULT_MARGIN.total_seconds(), ge=0)
    warehouse_lock_timeout_seconds: float = Field(default=120.0, ge=0)
    memory_limit_mb: int = Field(default=DEFAULT_MEMORY_LIMIT_MB, ge=0)


class SyncConfig(dg.Config):
    """Run config of the finance assets (set it in the launchpad or a job); unset fields
    take the deployment's defaults (``sync:`` in defs.yaml)."""

    full_refresh: bool = Field(
        default=False,
        description="Read everything and soft-delete records gone from the API "
        "(otherwise only records modified since each resource's cursor).",
    )
    parallel_endpoints: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="Endpoints fetched at once, each in its own DuckDB transaction; the API "
        "client's rate limit and in-flight bound hold across all of them.",
    )
    warehouse_lock_timeout_seconds: float | None = Field(
        default=None,
        ge=0,
        description="How long to wait while another process writes the DuckDB file.",
    )
    cursor_margin_seconds: float | None = Field(
        default=None,
        ge=0,
        description="The next cursor is this much before the pass began (server clock), "
        "to absorb clock skew; records in the margin are read again and upserted.",
    )
    memory_limit_mb: int | None = Field(
        default=None,
        ge=0,
        description="DuckDB's memory for the run, in MiB; what does not fit spills to disk "
        "next to the DuckDB file. 0: DuckDB's own default (80% of the machine's memory).",
    )

    def settled(self, defaults: SyncDefaults) -> SyncDefaults:
        """This run's settings: what the run config sets, else the deployment's defaults."""
        return SyncDefaults(
            parallel_endpoints=self.parallel_endpoints or defaults.parallel_endpoints,
            cursor_margin_seconds=(
                defaults.cursor_margin_seconds
                if self.cursor_margin_seconds is None
                else self.cursor_margin_seconds
            ),
            warehouse_lock_timeout_seconds=(
                defaults.warehouse_lock_timeout_seconds
                if self.warehouse_lock_timeout_seconds is None
                else self.warehouse_lock_timeout_seconds
            ),
            memory_limit_mb=(
                defaults.memory_limit_mb if self.memory_limit_mb is None else self.memory_limit_mb
            ),
        )


def _spec(
    endpoint: Endpoint, names: IngestionNames, freshness: dg.FreshnessPolicy | None
) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=names.asset_key(endpoint),
        description=f"{endpoint.description} From `GET {endpoint.path}` into "
        f"`{table_name(endpoint)}`.{_freshness_text(freshness)}",
        group_name=names.group,
        freshness_policy=freshness,
        kinds={"duckdb", "python"},
        tags={"domain": "finance", "source": "finance_api"},
        metadata={
            "dagster/table_name": table_name(endpoint),
            "dagster/column_schema": checks.column_schema(endpoint),
            "api_path": endpoint.path,
            "data_selector": endpoint.data_selector,
            "primary_key": endpoint.primary_key,
        },
        skippable=True,
    )


def _freshness_text(policy: dg.FreshnessPolicy | None) -> str:
    """The policy in words, for the description (``dg list defs`` and the catalog show it)."""
    warn, fail = getattr(policy, "warn_window", None), getattr(policy, "fail_window", None)
    if fail is None:
        return ""
    hours = [f"{w.to_timedelta().total_seconds() / 3600:g} h" for w in (warn, fail) if w]
    late = f"late {hours[0]}, " if warn else ""
    return f" Freshness: {late}stale {hours[-1]} after its last materialization."


def _materialization(
    key: dg.AssetKey,
    endpoint: Endpoint,
    report: LoadReport,
    row_count: int,
    source: str,
    organization: str,
) -> dg.MaterializeResult:
    stats = report.stats
    return dg.MaterializeResult(
        asset_key=key,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(row_count),
            "dagster/column_schema": checks.column_schema(endpoint),
            "dagster/table_name": table_name(endpoint),
            "source": dg.MetadataValue.text(source),
            "organization": dg.MetadataValue.text(organization),
            "mode": dg.MetadataValue.text(report.mode),
            "cursor_used": dg.MetadataValue.text(
                report.cursor_used.isoformat() if report.cursor_used else "none (full read)"
            ),
            "cursor_new": dg.MetadataValue.text(report.cursor_new.isoformat()),
            "records_fetched": dg.MetadataValue.int(report.records_fetched),
            "records_inserted": dg.MetadataValue.int(stats.inserted),
            "records_changed": dg.MetadataValue.int(stats.updated),
            "records_marked_deleted": dg.MetadataValue.int(stats.deleted),
            "records_restored": dg.MetadataValue.int(stats.restored),
            "records_rejected": dg.MetadataValue.int(stats.rejected),
            "pages": dg.MetadataValue.int(report.pages),
            "requests": dg.MetadataValue.int(report.requests),
            "retries": dg.MetadataValue.int(report.retries),
            "rate_limited_429": dg.MetadataValue.int(report.rate_limited),
            "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        },
    )


def _staging_config(duckdb: DuckDBResource) -> dict[str, Any]:
    """The resource's DuckDB settings that reach the warehouse (e.g. a MotherDuck token)."""
    return dict(duckdb.connection_config or {})


def load_order(warehouse: Warehouse, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """Largest first, so the longest pass is not the last to start: by the rows the
    warehouse holds, then (a first load) by the endpoint's ``high_volume`` hint."""
    rows = warehouse.row_estimates()
    return sorted(endpoints, key=lambda e: (-rows.get(table_name(e), 0), not e.high_volume))


def _failure(failures: list[tuple[Endpoint, Exception]], selected: int) -> dg.Failure:
    """One sentence when every endpoint failed for the same final reason (a refused
    credential), else each endpoint's."""
    reasons = {str(exc) for _, exc in failures}
    if len(reasons) == 1 and all(isinstance(exc, AuthError) for _, exc in failures):
        return dg.Failure(description=reasons.pop())
    return dg.Failure(
        description=f"{len(failures)} of {selected} endpoints failed; their tables are "
        "unchanged. " + " | ".join(f"{e.name}: {exc}" for e, exc in failures)
    )


def build_finance_assets(
    endpoints: Sequence[Endpoint] = ENDPOINTS,
    names: IngestionNames = DEFAULT_NAMES,
    defaults: SyncDefaults = SyncDefaults(),  # noqa: B008 - frozen
    freshness: dg.FreshnessPolicy | None = None,
    organizations: dg.StaticPartitionsDefinition | None = None,
) -> dg.AssetsDefinition:
    """The multi-asset over ``endpoints``; each asset can be materialized alone.

    ``freshness`` is each asset's policy: how long after its last successful
    materialization it is late (warn) and stale (fail), matching its schedule. With
    ``organizations``, every asset and check is partitioned by organization and a run
    syncs one (a backfill launches one run per organization)."""
    by_key = {names.asset_key(e): e for e in endpoints}

    @dg.multi_asset(
        name=names.sync_op,
        specs=[_spec(e, names, freshness) for e in endpoints],
        check_specs=[
            s for e in endpoints for s in checks.check_specs(e, names.asset_key(e), organizations)
        ],
        can_subset=True,
        partitions_def=organizations,
        backfill_policy=dg.BackfillPolicy.multi_run(1) if organizations else None,
        pool=names.pool,
        required_resource_keys={names.api_resource, names.warehouse_resource},
        description="Reads the selected endpoints of the financial API into DuckDB.",
    )
    def sync_finance_records(
        context: dg.AssetExecutionContext, config: SyncConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        api: FinanceApiResource = getattr(context.resources, names.api_resource)
        duckdb: DuckDBResource = getattr(context.resources, names.warehouse_resource)
        selected = [e for k, e in by_key.items() if k in context.selected_asset_keys]
        yield from _sync(context, config, config.settled(defaults), api, duckdb, selected, names)

    return sync_finance_records


def _sync(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    settings: SyncDefaults,
    api: FinanceApiResource,
    duckdb: DuckDBResource,
    selected: list[Endpoint],
    names: IngestionNames,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    organization = context.partition_key if context.has_partition_key else DEFAULT_ORGANIZATION
    whose = "" if organization == DEFAULT_ORGANIZATION else f" (organization {organization})"
    try:
        source = api.source_of(organization)
    except FinanceApiError as exc:
        raise dg.Failure(description=api.explain(organization, str(exc))) from None
    mode = "full refresh" if config.full_refresh else "incremental"
    context.log.info(
        f"Reading {source}{whose} into {duckdb.database}: {len(selected)} endpoints, {mode}."
    )
    context.instance.add_run_tags(
        context.run.run_id, {SOURCE_TAG: source, ORGANIZATION_TAG: organization}
    )
    wanted_checks = context.selected_asset_check_keys
    failures: list[tuple[Endpoint, Exception]] = []
    database, timeout = duckdb.database, settings.warehouse_lock_timeout_seconds
    with ExitStack() as opened:
        opened.enter_context(columnar.arrow_system_allocator())
        try:  # a setup error is the run's headline, in one sentence, before any write
            client = opened.enter_context(api.client(organization))  # refuses a bad URL
            conn, access = _warehouse_access(opened, duckdb, timeout, settings.memory_limit_mb)
            with access.open(conn) as catalog:  # a first short window: may this file take it?
                new_source = check_source(conn, source, database, organization, catalog)
            client.authenticate()  # the token endpoint is asked once; a refusal ends the run
        except (FinanceApiError, WarehouseBusyError, SourceMismatch) as exc:
            raise dg.Failure(description=api.explain(organization, str(exc))) from None
        warehouse = Warehouse(conn, organization, access)
        with access.open(conn) as catalog:  # DDL up front: concurrent CREATEs would conflict
            warehouse.drop_leftover_staging()  # (staging of runs before each had its own file)
            conn.begin()
            if new_source:
                record_source(conn, source, organization, catalog)
            for endpoint in selected:
                warehouse.ensure_tables(endpoint)
            conn.commit()
            # No DDL on finance tables from here on; the checks see this organization's rows.
            check_catalog = checks.read_catalog(conn, catalog, organization)
            order = load_order(warehouse, selected)
        margin = timedelta(seconds=settings.cursor_margin_seconds)
        known_fields = {  # what the previous checks saw, read here: workers do not touch Dagster
            e.name: checks.known_undocumented_fields(context.instance, names.asset_key(e))
            for e in selected
        }

        def load(endpoint: Endpoint) -> tuple[LoadReport, int, list[dg.AssetCheckResult]]:
            """Load, count and check one endpoint, all in this worker thread: the main
            thread only hands the results to Dagster (its event writes need the GIL)."""
            with conn.cursor() as own:  # a connection of its own: its own transaction
                wh = Warehouse(own, organization, access)
                report = load_endpoint(client, wh, endpoint, config.full_refresh, margin)
                key = names.asset_key(endpoint)
                with access.open(own):  # counted and checked in one more short window
                    results = checks.run_checks(
                        own, endpoint, key, catalog=check_catalog,
                        known_fields=known_fields[endpoint.name],
                    )  # fmt: skip
                    return report, wh.row_count(endpoint), results

        workers = min(settings.parallel_endpoints, len(selected)) or 1
        with ThreadPoolExecutor(workers, thread_name_prefix="finance-endpoint") as pool:
            futures = {pool.submit(load, e): e for e in order}
            for future in as_completed(futures):
                endpoint = futures[future]
                try:
                    report, rows, results = future.result()
                except Exception as exc:  # noqa: BLE001 - reported per endpoint below
                    failures.append((endpoint, exc))
                    context.log.error(f"{endpoint.name} failed and was left as it was: {exc}")
                    continue
                context.log.info(
                    f"{endpoint.name} ({report.mode}): {report.records_fetched} records in "
                    f"{report.pages} pages, {report.stats.inserted} new, "
                    f"{report.stats.updated} changed, {report.stats.deleted} marked deleted, "
                    f"{report.stats.rejected} rejected, {report.retries} retries, "
                    f"{report.seconds:.2f}s"
                )
                key = names.asset_key(endpoint)
                yield _materialization(key, endpoint, report, rows, source, organization)
                for result in results:
                    if dg.AssetCheckKey(key, result.check_name) in wanted_checks:
                        yield result
        if isinstance(access, AttachedWarehouse):  # how long other runs kept this one waiting
            context.log.info(
                f"The warehouse was attached {access.windows} times for this run, in "
                f"{access.attach_seconds:.2f}s (waits for other runs included)."
            )
    if failures:
        failure = _failure(failures, len(selected))
        raise dg.Failure(description=api.explain(organization, failure.description or ""))


def _warehouse_access(
    opened: ExitStack, duckdb: DuckDBResource, lock_timeout: float, memory_limit_mb: int
) -> tuple[duckdb_.DuckDBPyConnection, WarehouseAccess]:
    """The run's connection, its memory bounded (``warehouse/memory.py``), and how it
    reaches the warehouse: a file of its own for staging with the warehouse attached in
    short windows, so runs of several organizations fetch side by side; an in-memory
    warehouse is the connection itself."""
    if duckdb.database == ":memory:":
        conn = opened.enter_context(duckdb_.connect(":memory:", config=_staging_config(duckdb)))
        bound_memory(conn, memory_limit_mb)
        return conn, OwnDatabase(conn)
    if not duckdb.database.startswith("md:"):
        Path(duckdb.database).parent.mkdir(parents=True, exist_ok=True)
    conn = opened.enter_context(run_database(_staging_config(duckdb)))
    bound_memory(conn, memory_limit_mb)  # covers the warehouse too while it is attached
    return conn, AttachedWarehouse(conn, duckdb.database, lock_timeout)
