"""Shared pieces of the fault, bad-answer, secret and interrupt tests.

Real parts only: the sandbox over loopback HTTP, real Dagster materializations,
temporary DuckDB files, and the ``dagster`` CLI in a subprocess where a whole
process must be observed or killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from finance_assets.assets import build_finance_assets
from finance_assets.resources import FinanceApiResource
from finance_assets.sandbox import Sandbox

SCALE = 0.02  # about 400 records: every resource present, a full load takes about a second
# Retries that cost milliseconds, so fault tests stay fast; real waits only where told (429).
FAST_RETRIES: dict[str, Any] = {
    "backoff_base_seconds": 0.01,
    "backoff_max_seconds": 0.05,
    "max_attempts": 10,
    "max_retry_seconds": 30.0,
}


def api_for(sb: Sandbox, **kwargs: Any) -> FinanceApiResource:
    """The resource pointed at a sandbox, with fast retries unless overridden."""
    settings: dict[str, Any] = {
        "base_url": sb.base_url,
        "token_url": sb.token_url,
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "refresh_token": sb.refresh_token,
        **FAST_RETRIES,
    }
    settings.update(kwargs)
    return FinanceApiResource(**settings)


def run(
    api: FinanceApiResource,
    database: Path,
    selection: list[str] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """One real materialization (all assets unless ``selection``); never raises on failure."""

    def go(inst: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [build_finance_assets()],
            selection=selection,
            resources={"finance_api": api, "duckdb": DuckDBResource(database=str(database))},
            instance=inst,
            raise_on_error=False,
        )

    # In-memory storage unless told otherwise: sqlite event storage is most of a small run.
    return go(instance or dg.DagsterInstance.ephemeral())


def failure_message(result: dg.ExecuteInProcessResult, headline: bool = False) -> str:
    """The run's step failure message without a stack.

    Dagster wraps an exception the op did not turn into ``dg.Failure`` in a generic
    step error; the user's sentence is then its innermost cause (shown under it in
    the UI), which is returned unless ``headline``.
    """
    failures = result.get_step_failure_events()
    assert failures, "the run did not fail"
    error = failures[0].step_failure_data.error
    assert error is not None
    while error.cause is not None and not headline:
        error = error.cause
    return error.message.strip()


def all_tables(database: Path) -> dict[str, list[tuple]]:
    """Every table of the file (data and bookkeeping) with every column, sorted rows.

    Stricter than ``test_assets.snapshot``: a failed run must not touch even load times,
    cursors or the quarantine.
    """
    out: dict[str, list[tuple]] = {}
    with duckdb.connect(str(database), read_only=True) as conn:
        names = conn.execute(
            "select table_schema, table_name from information_schema.tables order by all"
        ).fetchall()
        for schema, table in names:
            out[f"{schema}.{table}"] = conn.execute(
                f'select * from "{schema}"."{table}" order by all'
            ).fetchall()
    return out


def cli_env(sb: Sandbox, database: Path, home: Path, **overrides: str) -> dict[str, str]:
    """Environment of a ``dagster`` CLI run against the sandbox, with temporary paths."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINANCE_", "DAGSTER_"))}
    env.update(
        FINANCE_API_BASE_URL=sb.base_url,
        FINANCE_API_TOKEN_URL=sb.token_url,
        FINANCE_API_CLIENT_ID=sb.client_id,
        FINANCE_API_CLIENT_SECRET=sb.client_secret,
        FINANCE_API_REFRESH_TOKEN=sb.refresh_token,
        FINANCE_DUCKDB_PATH=str(database),
        DAGSTER_HOME=str(home),
    )
    env.update(overrides)
    return env


CLI_MATERIALIZE = [
    sys.executable, "-m", "dagster", "asset", "materialize",
    "-m", "finance_assets.definitions", "--select", "*",
]


def start_cli(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """``dagster asset materialize --select '*'`` in its own process group (to kill it whole).

    Output goes to ``cwd/stdout.txt`` and ``cwd/stderr.txt`` (a pipe could fill and stall it).
    """
    cwd.mkdir(parents=True, exist_ok=True)
    with open(cwd / "stdout.txt", "wb") as out, open(cwd / "stderr.txt", "wb") as err:
        return subprocess.Popen(
            CLI_MATERIALIZE, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True
        )


def cli_output(cwd: Path) -> str:
    """What a CLI run started by ``start_cli`` printed, stdout then stderr."""
    return "".join(
        (cwd / name).read_text(errors="replace") for name in ("stdout.txt", "stderr.txt")
    )
