"""The ingestion as a reusable Dagster Component: a ``defs.yaml`` says what to load, from
where, into which file and when; the code builds the assets, checks, jobs and schedules."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from finance_assets.alerts import build_failure_alert_sensor
from finance_assets.assets import IngestionNames, SyncDefaults, build_finance_assets
from finance_assets.components.connection import (
    ApiConnection,
    ConfigurationError,
    NamedSetting,
    Source,
    choose_source,
)
from finance_assets.components.organizations import (
    Organization,
    checked,
    read_organizations_file,
)
from finance_assets.endpoints import BY_NAME, ENDPOINTS, Endpoint
from finance_assets.resources import FinanceApiResource, OrganizationConnection

DATA_DIR = "data"


class SandboxSettings(dg.Model, dg.Resolvable):
    """The bundled sandbox API, used when chosen or when no API variable is set."""

    seed: int = Field(default=42, description="Data seed: the same seed, the same records.")
    scale: float = Field(default=1.0, gt=0, description="Size; 1 is about 20,000 records.")


class WarehouseSettings(dg.Model, dg.Resolvable):
    """The DuckDB file; unset, the API and the sandbox each get a file of their own."""

    path: str | None = Field(
        default=None,
        description="DuckDB file (unset: data/warehouse.duckdb for the API, "
        "data/sandbox.duckdb for the sandbox; another instance's name replaces 'warehouse').",
    )


class ScheduleSettings(dg.Model, dg.Resolvable):
    """When the incremental sync and the full refresh (which finds deletions) run, and
    when an asset that has not landed since counts as late and as stale."""

    incremental_cron: str = "0 3 * * *"
    full_refresh_cron: str = "0 4 * * 0"
    timezone: str = "UTC"
    late_after_hours: float = Field(
        default=26, gt=0, description="Freshness warns: a daily run plus two hours of slack."
    )
    stale_after_hours: float = Field(
        default=50, gt=0, description="Freshness fails: two daily runs missed, and then some."
    )

    def freshness(self) -> dg.FreshnessPolicy:
        return dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=self.stale_after_hours),
            warn_window=timedelta(hours=self.late_after_hours),
        )


class _Scaffolder(dg.Scaffolder):
    """``dg scaffold defs`` writes a second instance named after its folder, with its own
    variables, so it loads beside the first."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = Path(request.target_path).name.replace("-", "_").lower()
        prefix = name.upper()
        dg.scaffold_component(
            request,
            {
                "name": name,
                "source": f"{{{{ env.{prefix}_SOURCE }}}}",
                "connection": {
                    field: f"{{{{ env.{prefix}_API_{field.upper()} }}}}"
                    for field in (
                        "base_url", "token_url", "client_id", "client_secret", "refresh_token",
                        "rate_limit_per_minute",
                    )
                },  # fmt: skip
            },
        )


@dg.scaffold_with(_Scaffolder)
class FinanceApiIngestion(dg.Component, dg.Model, dg.Resolvable):
    """Financial records from an OAuth2 REST API into DuckDB, exact to the cent: one asset
    per endpoint with nullability, key and quarantine checks, an incremental job, a full
    refresh job and their schedules."""

    name: str = Field(
        default="finance",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Names this instance's group, jobs, schedules and resources.",
    )
    endpoints: Literal["all"] | list[str] = Field(
        default="all", description="Endpoint names to load (default: all sixteen)."
    )
    source: NamedSetting = Field(
        default=None,
        description="'api', 'sandbox', or unset: the API when configured, the sandbox when "
        "none of its variables is set (usually `{{ env.FINANCE_SOURCE }}`).",
    )
    connection: ApiConnection = ApiConnection()
    organizations: list[Organization] = Field(
        default_factory=list,
        description="Several organizations, each its own connection and partition (empty: "
        "the one connection above).",
    )
    organizations_file: NamedSetting = Field(
        default=None,
        description="A YAML file listing `organizations:` instead (usually "
        "`{{ env.FINANCE_ORGANIZATIONS_FILE }}`); unset or empty: none.",
    )
    sandbox: SandboxSettings = SandboxSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    sync: SyncDefaults = SyncDefaults()
    schedules: ScheduleSettings = ScheduleSettings()

    def selected_endpoints(self) -> list[Endpoint]:
        if self.endpoints == "all":
            return list(ENDPOINTS)
        unknown = [n for n in self.endpoints if n not in BY_NAME]
        if unknown:
            raise ConfigurationError(
                f"defs.yaml lists unknown endpoints {', '.join(unknown)}; use names from "
                f"finance_assets/endpoints.py: {', '.join(BY_NAME)}."
            )
        return [BY_NAME[n] for n in self.endpoints]

    def declared_organizations(self) -> list[Organization]:
        """The organizations of the YAML or of the file it names (checked); empty: one
        connection."""
        path = self.organizations_file.read(os.environ) if self.organizations_file else None
        if path and self.organizations:
            raise ConfigurationError(
                f"organizations are listed in defs.yaml and in {path}; keep one list."
            )
        return checked(read_organizations_file(path) if path else list(self.organizations))

    def api_resource(self) -> tuple[FinanceApiResource, Source | None]:
        """The resource and its source; a configuration the environment leaves incomplete
        still loads (the UI shows why), and its runs fail at once with that sentence."""
        try:
            organizations = self.declared_organizations()
            if organizations:
                source: Source = "sandbox" if organizations[0].sandbox else "api"
                return FinanceApiResource(
                    organizations=[_connection(o) for o in organizations]
                ), source
            source = choose_source(self.source, self.connection)
            return self._resource(source), source
        except ConfigurationError as exc:
            return FinanceApiResource(configuration_error=str(exc)), None

    def _resource(self, source: Source) -> FinanceApiResource:
        if source == "sandbox":
            return FinanceApiResource(
                use_sandbox=True, sandbox_seed=self.sandbox.seed, sandbox_scale=self.sandbox.scale
            )
        credentials = {
            field: setting.for_resource()
            for field, setting in self.connection.credentials.items()
            if setting is not None
        }
        return FinanceApiResource(
            **credentials, rate_limit_per_minute=self.connection.rate_limit(os.environ)
        )

    def database(self, source: Source | None) -> str:
        """The file runs write: the sandbox never defaults to the file the API's runs use."""
        if self.warehouse.path:
            return self.warehouse.path
        stem = "warehouse" if self.name == IngestionNames.group else self.name
        if source != "api":
            stem = "sandbox" if stem == "warehouse" else f"{stem}_sandbox"
        return f"{DATA_DIR}/{stem}.duckdb"

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        names = IngestionNames.for_instance(self.name)
        api, source = self.api_resource()
        organizations = (
            dg.StaticPartitionsDefinition(api.organization_keys) if api.organizations else None
        )
        assets = build_finance_assets(
            self.selected_endpoints(), names, self.sync, self.schedules.freshness(), organizations
        )
        # WARN when a table's columns change between two materializations (an upgrade
        # of the models); the API's own new fields are the undocumented_fields check's.
        schema_changes = dg.build_column_schema_change_checks(
            assets=[assets], severity=dg.AssetCheckSeverity.WARN
        )
        selection = dg.AssetSelection.assets(assets)
        incremental = dg.define_asset_job(
            name=names.incremental_job,
            selection=selection,
            description="Incremental: every asset reads what changed since its cursor, then "
            "runs its checks. A resource without a cursor is read in full.",
        )
        full_refresh = dg.define_asset_job(
            name=names.full_refresh_job,
            selection=selection,
            config={"ops": {names.sync_op: {"config": {"full_refresh": True}}}},
            description="Read every resource in full and soft-delete (`_deleted_at`) records "
            "that are gone from the API.",
        )
        timing = self.schedules
        schedules = [
            _schedule(name, job, cron, timing.timezone, what, organizations)
            for name, job, cron, what in (
                (names.incremental_schedule, incremental, timing.incremental_cron,
                 "Incremental sync and checks"),
                (names.full_refresh_schedule, full_refresh, timing.full_refresh_cron,
                 "Full refresh, which also detects deleted records"),
            )
        ]  # fmt: skip
        return dg.Definitions(
            assets=[assets],
            asset_checks=schema_changes,
            jobs=[incremental, full_refresh],
            schedules=schedules,
            sensors=[build_failure_alert_sensor(names.failure_sensor, [incremental, full_refresh])],
            resources={
                names.api_resource: api,
                names.warehouse_resource: DuckDBResource(database=self.database(source)),
            },
            # One step (one multi-asset): a step subprocess would only add start-up time.
            executor=dg.in_process_executor,
        )


def _connection(organization: Organization) -> OrganizationConnection:
    """What a run needs of a declared organization (secrets stay named, not read)."""
    sandbox = organization.sandbox
    return OrganizationConnection(
        key=organization.key,
        base_url=organization.base_url,
        token_url=organization.token_url,
        client_id_env=organization.client_id_env,
        client_secret_env=organization.client_secret_env,
        refresh_token_env=organization.refresh_token_env,
        rate_limit_per_minute=organization.rate_limit_per_minute,
        use_sandbox=sandbox is not None,
        sandbox_seed=sandbox.seed if sandbox else 42,
        sandbox_scale=sandbox.scale if sandbox else 1.0,
        sandbox_rate_limit_per_minute=sandbox.rate_limit_per_minute if sandbox else None,
    )


def _schedule(
    name: str,
    job: dg.UnresolvedAssetJobDefinition,
    cron: str,
    timezone: str,
    what: str,
    organizations: dg.StaticPartitionsDefinition | None,
) -> dg.ScheduleDefinition:
    """The job on its cron; with organizations, one run per organization at each tick
    (each its own token, quota and failure), queued side by side."""
    description = f"{what} ({cron}, {timezone})."
    if organizations is None:
        return dg.ScheduleDefinition(
            name=name, job=job, cron_schedule=cron, execution_timezone=timezone,
            description=description,
        )  # fmt: skip

    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone=timezone,
        description=f"{description} One run per organization.",
    )
    def every_organization(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time.isoformat()
        return [
            dg.RunRequest(run_key=f"{key}:{tick}", partition_key=key)
            for key in organizations.get_partition_keys()
        ]

    return every_organization
