"""The finance marts as a Component: a ``defs.yaml`` names the ingestion whose tables
they read; the code builds the marts, their checks, a job and their automation."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from finance_assets.assets import IngestionNames
from finance_assets.marts import build_mart_assets, mart_names


class FinanceMarts(dg.Component, dg.Model, dg.Resolvable):
    """Reports over one ingestion's DuckDB file (schema ``marts``), rebuilt by automation
    after its assets land and their blocking checks pass."""

    ingestion: str = Field(
        default="finance",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The FinanceApiIngestion instance (its `name`) whose tables are read.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        names = mart_names(IngestionNames.for_instance(self.ingestion))
        marts = build_mart_assets(names.ingestion)
        selection = dg.AssetSelection.assets(marts)
        return dg.Definitions(
            assets=[marts],
            jobs=[
                dg.define_asset_job(
                    name=names.job,
                    selection=selection,
                    description="Build the marts and run their checks; set `as_of` in the "
                    f"config of op {names.op} to rebuild a past date.",
                )
            ],
            sensors=[
                dg.AutomationConditionSensorDefinition(
                    names.automation_sensor,
                    target=selection,
                    default_status=dg.DefaultSensorStatus.RUNNING,
                    description="Rebuilds the marts after their finance assets land.",
                )
            ],
        )
