"""One factory over ENDPOINTS: sixteen subsettable assets in one multi-asset.

One op serves every selected endpoint so a run mints one access token (providers
cap token mints) and one process writes the DuckDB file. Endpoints are fetched
concurrently (bounded), each validated and merged in its own transaction; one
failing endpoint does not keep the others from landing, and the run then fails
naming it.
"""

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, ExitStack
from datetime import timedelta
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from finance_assets import checks, columnar
from finance_assets.api import FinanceApiError
from finance_assets.duckdb_lock import WarehouseBusyError, locked_connection
from finance_assets.endpoints import ENDPOINTS, Endpoint
from finance_assets.resources import FinanceApiResource
from finance_assets.sync import DEFAULT_MARGIN, LoadReport, load_endpoint
from finance_assets.warehouse import Warehouse, table_name

GROUP = "finance"


def asset_key(endpoint: Endpoint) -> dg.AssetKey:
    return dg.AssetKey(endpoint.name)


class SyncConfig(dg.Config):
    """Run config of the finance assets (set it in the launchpad or a job)."""

    full_refresh: bool = Field(
        default=False,
        description="Read everything and soft-delete records gone from the API "
        "(otherwise only records modified since each resource's cursor).",
    )
    parallel_endpoints: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Endpoints fetched at once, each in its own DuckDB transaction; the API "
        "client's rate limit and in-flight bound hold across all of them.",
    )
    warehouse_lock_timeout_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long to wait while another process writes the DuckDB file.",
    )
    cursor_margin_seconds: float = Field(
        default=DEFAULT_MARGIN.total_seconds(),
        ge=0,
        description="The next cursor is this much before the pass began (server clock), "
        "to absorb clock skew; records in the margin are read again and upserted.",
    )


def _spec(endpoint: Endpoint) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=asset_key(endpoint),
        description=f"{endpoint.description} From `GET {endpoint.path}` into "
        f"`{table_name(endpoint)}`.",
        group_name=GROUP,
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


def _materialization(
    endpoint: Endpoint, report: LoadReport, row_count: int
) -> dg.MaterializeResult:
    stats = report.stats
    return dg.MaterializeResult(
        asset_key=asset_key(endpoint),
        metadata={
            "dagster/row_count": dg.MetadataValue.int(row_count),
            "dagster/column_schema": checks.column_schema(endpoint),
            "dagster/table_name": table_name(endpoint),
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


def _open_warehouse(duckdb: DuckDBResource, config: SyncConfig) -> AbstractContextManager:
    """The DuckDB file of the resource, waiting (bounded) while another process writes it."""
    database = duckdb.database
    if database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return locked_connection(
        database, config.warehouse_lock_timeout_seconds, config=duckdb.connection_config
    )


def load_order(warehouse: Warehouse, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """Largest first, so the longest pass is not the last to start: by the rows the
    warehouse holds, then (a first load) by the endpoint's ``high_volume`` hint."""
    held = warehouse.row_estimates()
    return sorted(endpoints, key=lambda e: (-held.get(table_name(e), 0), not e.high_volume))


def build_finance_assets(endpoints: Sequence[Endpoint] = ENDPOINTS) -> dg.AssetsDefinition:
    """The multi-asset over ``endpoints``; each asset can be materialized alone."""

    @dg.multi_asset(
        name="finance_api",
        specs=[_spec(e) for e in endpoints],
        check_specs=[spec for e in endpoints for spec in checks.check_specs(e, asset_key(e))],
        can_subset=True,
        pool="finance_duckdb",
        description="Reads the selected endpoints of the financial API into DuckDB.",
    )
    def finance_api(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        finance_api: FinanceApiResource,
        duckdb: DuckDBResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        selected = [e for e in endpoints if asset_key(e) in context.selected_asset_keys]
        wanted_checks = context.selected_asset_check_keys
        failures: list[str] = []
        with ExitStack() as opened:
            opened.enter_context(columnar.system_allocator())
            try:  # a setup error is the run's headline, in one sentence
                client = opened.enter_context(finance_api.client())
                conn = opened.enter_context(_open_warehouse(duckdb, config))
            except (FinanceApiError, WarehouseBusyError) as exc:
                raise dg.Failure(description=str(exc)) from None
            warehouse = Warehouse(conn)
            for endpoint in selected:  # DDL up front: concurrent CREATEs would conflict
                warehouse.ensure_tables(endpoint)
            catalog = checks.read_catalog(conn)  # no DDL on finance tables from here on

            def load(endpoint: Endpoint) -> tuple[LoadReport, int, list[dg.AssetCheckResult]]:
                """Load, count and check one endpoint, all in this worker thread: the main
                thread only hands the results to Dagster (its event writes need the GIL)."""
                with conn.cursor() as own:  # a connection of its own: its own transaction
                    wh = Warehouse(own)
                    report = load_endpoint(client, wh, endpoint, config.full_refresh, margin)
                    key = asset_key(endpoint)
                    results = checks.run_checks(own, endpoint, key, catalog=catalog)
                    return report, wh.row_count(endpoint), results

            margin = timedelta(seconds=config.cursor_margin_seconds)
            workers = min(config.parallel_endpoints, len(selected)) or 1
            with ThreadPoolExecutor(workers, thread_name_prefix="finance-endpoint") as pool:
                futures = {pool.submit(load, e): e for e in load_order(warehouse, selected)}
                for future in as_completed(futures):
                    endpoint = futures[future]
                    try:
                        report, rows, results = future.result()
                    except Exception as exc:  # noqa: BLE001 - reported per endpoint below
                        failures.append(f"{endpoint.name}: {exc}")
                        context.log.error(f"{endpoint.name} failed and was left as it was: {exc}")
                        continue
                    context.log.info(
                        f"{endpoint.name} ({report.mode}): {report.records_fetched} records in "
                        f"{report.pages} pages, {report.stats.inserted} new, "
                        f"{report.stats.updated} changed, {report.stats.deleted} marked deleted, "
                        f"{report.stats.rejected} rejected, {report.retries} retries, "
                        f"{report.seconds:.2f}s"
                    )
                    yield _materialization(endpoint, report, rows)
                    key = asset_key(endpoint)
                    for result in results:
                        if dg.AssetCheckKey(key, result.check_name) in wanted_checks:
                            yield result
        if failures:
            raise dg.Failure(
                description=f"{len(failures)} of {len(selected)} endpoints failed; their tables "
                "are unchanged. " + " | ".join(failures)
            )

    return finance_api


finance_assets = build_finance_assets()
