"""One factory over ENDPOINTS: sixteen subsettable assets in one multi-asset.

One op serves every selected endpoint so a run mints one access token (providers
cap token mints) and DuckDB sees one writer. Each endpoint is fetched, validated
and merged in its own transaction; one failing endpoint does not keep the others
from landing, and the run then fails naming it.
"""

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from finance_assets import checks
from finance_assets.client import FinanceApiClient
from finance_assets.endpoints import ENDPOINTS, Endpoint
from finance_assets.resources import FinanceApiResource
from finance_assets.validation import validate_page
from finance_assets.warehouse import Warehouse, table_name

GROUP = "finance"


def asset_key(endpoint: Endpoint) -> dg.AssetKey:
    return dg.AssetKey(endpoint.name)


@dataclass(frozen=True)
class LoadReport:
    """What loading one endpoint did, for the materialization's metadata."""

    records_fetched: int
    rows_written: int
    rejected: int
    pages: int
    requests: int
    retries: int
    rate_limited: int
    seconds: float


def load_endpoint(client: FinanceApiClient, warehouse: Warehouse, endpoint: Endpoint) -> LoadReport:
    """Stream an endpoint's pages through validation into one warehouse transaction."""
    started = time.perf_counter()
    before = client.stats.snapshot()
    fetched = rejected = 0
    loaded_at = datetime.now(timezone.utc)
    with warehouse.writer(endpoint, loaded_at) as writer:
        for page in client.iter_pages(endpoint.path, endpoint.data_selector):
            valid, bad = validate_page(endpoint.model, page.records)
            fetched += len(page.records)
            rejected += len(bad)
            writer.add(valid)
            writer.reject(bad)
    after = client.stats.snapshot()
    return LoadReport(
        records_fetched=fetched,
        rows_written=writer.rows_staged,
        rejected=rejected,
        pages=after["pages"] - before["pages"],
        requests=after["requests"] - before["requests"],
        retries=after["retries"] - before["retries"],
        rate_limited=after["rate_limited"] - before["rate_limited"],
        seconds=time.perf_counter() - started,
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
    return dg.MaterializeResult(
        asset_key=asset_key(endpoint),
        metadata={
            "dagster/row_count": dg.MetadataValue.int(row_count),
            "dagster/column_schema": checks.column_schema(endpoint),
            "dagster/table_name": table_name(endpoint),
            "records_fetched": dg.MetadataValue.int(report.records_fetched),
            "records_rejected": dg.MetadataValue.int(report.rejected),
            "pages": dg.MetadataValue.int(report.pages),
            "requests": dg.MetadataValue.int(report.requests),
            "retries": dg.MetadataValue.int(report.retries),
            "rate_limited_429": dg.MetadataValue.int(report.rate_limited),
            "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        },
    )


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
        finance_api: FinanceApiResource,
        duckdb: DuckDBResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        selected = [e for e in endpoints if asset_key(e) in context.selected_asset_keys]
        wanted_checks = context.selected_asset_check_keys
        failures: list[str] = []
        database = getattr(duckdb, "database", "")
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        with finance_api.client() as client, duckdb.get_connection() as conn:
            warehouse = Warehouse(conn)
            for endpoint in selected:
                try:
                    report = load_endpoint(client, warehouse, endpoint)
                except Exception as exc:  # noqa: BLE001 - reported per endpoint below
                    failures.append(f"{endpoint.name}: {exc}")
                    context.log.error(f"{endpoint.name} failed and was left as it was: {exc}")
                    continue
                context.log.info(
                    f"{endpoint.name}: {report.records_fetched} records in {report.pages} pages, "
                    f"{report.rejected} rejected, {report.retries} retries, {report.seconds:.2f}s"
                )
                yield _materialization(endpoint, report, warehouse.row_count(endpoint))
                for result in checks.run_checks(conn, endpoint, asset_key(endpoint)):
                    if dg.AssetCheckKey(asset_key(endpoint), result.check_name) in wanted_checks:
                        yield result
        if failures:
            raise dg.Failure(
                description=f"{len(failures)} of {len(selected)} endpoints failed; their tables "
                "are unchanged. " + " | ".join(failures)
            )

    return finance_api


finance_assets = build_finance_assets()
