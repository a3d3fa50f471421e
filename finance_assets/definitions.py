"""Everything Dagster loads comes from the ``defs/`` folder, as the project template does it."""

import os
import warnings
from functools import cache
from pathlib import Path

import dagster as dg

# Dagster's own notices about its beta internals, raised by its column schema change
# checks and by how it stores a multi-asset's checks: nothing a user of this project can
# act on, so they stay out of the demo's, the report's and the CLI's output. (Set here,
# at import: loading the defs folder restores the warning filters it found.)
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*execution_type")
warnings.filterwarnings(
    "ignore", category=dg.BetaWarning, message=".*build_column_schema_change_checks"
)


@dg.definitions
def defs() -> dg.Definitions:
    return _load(frozenset(os.environ.items()))


@cache
def _load(environment: frozenset[tuple[str, str]]) -> dg.Definitions:
    """Built once per environment: Dagster asks for the definitions several times in one
    process (loading the code, then planning and running the job), and they depend only
    on the files and the environment variables the YAML names."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
