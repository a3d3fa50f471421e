"""Everything Dagster loads comes from the ``defs/`` folder, as the project template does it."""

import os
from functools import cache
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return _load(frozenset(os.environ.items()))


@cache
def _load(environment: frozenset[tuple[str, str]]) -> dg.Definitions:
    """Built once per environment: Dagster asks for the definitions several times in one
    process (loading the code, then planning and running the job), and they depend only
    on the files and the environment variables the YAML names."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
