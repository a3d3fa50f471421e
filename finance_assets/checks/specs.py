"""What the definitions declare: the checks of every resource asset and the column
schema shown in Dagster, read from the models (no database needed).

The three ERROR checks block: a failure stops anything downstream of the asset in the
run, because a duplicate counts twice, a quarantined record is missing from every
total and a null amount sums as nothing. Undocumented fields only warn: the records
are whole, but the API has started to say more than its contract.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from finance_assets.endpoints import Endpoint
from finance_assets.schema import (
    PARENT_ID_COLUMN,
    POSITION_COLUMN,
    REJECTED_TABLE,
    column_specs,
    table_name,
    table_names,
)

NULLABILITY = "nullability"
PRIMARY_KEY = "primary_key"
QUARANTINE = "quarantine"
UNDOCUMENTED_FIELDS = "undocumented_fields"
CHECKS = (NULLABILITY, PRIMARY_KEY, QUARANTINE, UNDOCUMENTED_FIELDS)  # as ``check_specs``

CoercibleAssetKey = dg.AssetKey | str | Sequence[str]


def column_schema(endpoint: Endpoint) -> dg.TableSchema:
    """Parent table columns for ``dagster/column_schema``; non-nullable fields constrained."""
    columns = []
    for spec in column_specs(endpoint.model):
        constraints = None
        if spec.name == endpoint.primary_key:
            constraints = dg.TableColumnConstraints(nullable=False, unique=True)
        elif not spec.nullable:
            constraints = dg.TableColumnConstraints(nullable=False)
        columns.append(dg.TableColumn(spec.name, spec.sql_type, spec.description, constraints))
    return dg.TableSchema(columns=columns)


def check_specs(
    endpoint: Endpoint,
    asset_key: CoercibleAssetKey,
    organizations: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetCheckSpec]:
    """The checks every resource asset declares; partitioned like the asset when there are
    several organizations, each organization's rows checked in its own run."""
    key = dg.AssetKey.from_coercible(asset_key)
    tables = ", ".join(table_names(endpoint))
    return [
        dg.AssetCheckSpec(
            NULLABILITY,
            asset=key,
            partitions_def=organizations,
            description=(
                f"Blocking. No NULL in any field the API documents as non-nullable, in {tables}. "
                "Such records are loaded as they came so this check can name them."
            ),
            blocking=True,
        ),
        dg.AssetCheckSpec(
            PRIMARY_KEY,
            asset=key,
            partitions_def=organizations,
            description=(
                f"Blocking. `{endpoint.primary_key}` is never NULL and unique in "
                f"{table_name(endpoint)}; "
                f"child tables have unique ({PARENT_ID_COLUMN}, {POSITION_COLUMN}) and no "
                "orphan rows."
            ),
            blocking=True,
        ),
        dg.AssetCheckSpec(
            QUARANTINE,
            asset=key,
            partitions_def=organizations,
            description=(
                f"Blocking. No record of `{endpoint.name}` is quarantined in {REJECTED_TABLE}: "
                "every record the API sent fit the schema (wrong types, unparseable dates and "
                "non-numeric amounts land there with their reason)."
            ),
            blocking=True,
        ),
        dg.AssetCheckSpec(
            UNDOCUMENTED_FIELDS,
            asset=key,
            partitions_def=organizations,
            description=(
                f"Warns when the API starts sending fields its contract does not document "
                f"(kept in `_extra` of {tables}): which fields, on how many records, first "
                "seen when. Often the first sign of a change to the API."
            ),
        ),
    ]
