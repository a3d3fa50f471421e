"""Dagster definitions: the sixteen assets, their checks, a job and its daily schedule."""

from __future__ import annotations

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from finance_assets.assets import finance_assets
from finance_assets.resources import api_resource_from_env

DEFAULT_DUCKDB_PATH = "data/warehouse.duckdb"

finance_job = dg.define_asset_job(
    name="finance_daily",
    selection=dg.AssetSelection.assets(finance_assets),
    description="Materialize all sixteen finance assets and run their checks.",
)

daily_schedule = dg.ScheduleDefinition(
    name="finance_daily_schedule",
    job=finance_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Every day at 03:00 UTC: all sixteen assets and their checks.",
)


def build_defs(duckdb_path: str | None = None) -> dg.Definitions:
    """Definitions with the DuckDB file from ``FINANCE_DUCKDB_PATH`` (or the default)."""
    database = duckdb_path or os.getenv("FINANCE_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH
    return dg.Definitions(
        assets=[finance_assets],
        jobs=[finance_job],
        schedules=[daily_schedule],
        resources={
            "finance_api": api_resource_from_env(),
            "duckdb": DuckDBResource(database=database),
        },
    )


defs = build_defs()
