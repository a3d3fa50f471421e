"""Asset checks over the warehouse: nullability, primary keys, quarantine and undocumented
fields, per resource.

The first two read nullability and keys from the models (via ``schema``), so one
generic mechanism covers every endpoint; the third makes records the schema could
not hold (kept in ``finance._rejected``) fail loudly instead of hiding; the fourth
warns when the API starts sending fields its contract does not name. ``specs.py``
is what the definitions declare, ``scan.py`` the queries, ``results.py`` the verdicts.
"""

from finance_assets.checks.results import KnownFields, known_undocumented_fields, run_checks
from finance_assets.checks.scan import (
    SAMPLE_SIZE,
    Catalog,
    CheckedTable,
    read_catalog,
    tables_to_check,
)
from finance_assets.checks.specs import (
    CHECKS,
    NULLABILITY,
    PRIMARY_KEY,
    QUARANTINE,
    UNDOCUMENTED_FIELDS,
    CoercibleAssetKey,
    check_specs,
    column_schema,
)

__all__ = [
    "CHECKS",
    "KnownFields",
    "NULLABILITY",
    "PRIMARY_KEY",
    "QUARANTINE",
    "UNDOCUMENTED_FIELDS",
    "SAMPLE_SIZE",
    "Catalog",
    "CheckedTable",
    "CoercibleAssetKey",
    "check_specs",
    "column_schema",
    "known_undocumented_fields",
    "read_catalog",
    "run_checks",
    "tables_to_check",
]
