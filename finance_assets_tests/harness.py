"""Shared pieces of the tests that run real materializations against the sandbox.

Real parts only: the sandbox over loopback HTTP, real Dagster materializations,
temporary DuckDB files, and the ``dagster`` CLI in a subprocess where a whole
process must be observed or killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from finance_assets.assets import DEFAULT_NAMES, build_finance_assets
from finance_assets.endpoints import ENDPOINTS, Endpoint
from finance_assets.models import DecimalType
from finance_assets.resources import FinanceApiResource
from finance_assets.sandbox import Sandbox

SYNC_OP = DEFAULT_NAMES.sync_op  # the run-config key of the assets' op

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
    return sandbox_api(sb, **{**FAST_RETRIES, **kwargs})


def sandbox_api(sb: Sandbox, **kwargs: Any) -> FinanceApiResource:
    """The resource pointed at a sandbox server (as the real API: base URL, credentials);
    ``kwargs`` override any setting."""
    connection = {
        "base_url": sb.base_url,
        "token_url": sb.token_url,
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "refresh_token": sb.refresh_token,
    }
    return FinanceApiResource(**{**connection, **kwargs})


def materialize(
    sb: Sandbox,
    database: Path,
    selection: list[str] | None = None,
    full_refresh: bool = False,
    margin: float | None = None,
    **api_settings,
) -> dg.ExecuteInProcessResult:
    """One real materialization; ``full_refresh``/``margin`` are the run config."""
    config: dict = {"full_refresh": full_refresh}
    if margin is not None:
        config["cursor_margin_seconds"] = margin
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [build_finance_assets()],
            selection=selection,
            resources={
                "finance_api": sandbox_api(sb, **api_settings),
                "duckdb": DuckDBResource(database=str(database)),
            },
            run_config={"ops": {SYNC_OP: {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )


def decimal_fields(model) -> list[str]:
    return [
        name
        for name, info in model.model_fields.items()
        if any(isinstance(m, DecimalType) for m in info.metadata)
    ]


def non_nullable(model) -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        args = getattr(info.annotation, "__args__", ())
        if type(None) not in args:
            out.append(name)
    return out


def tables_of(endpoint: Endpoint) -> Iterator[tuple[str, type, str | None]]:
    """(table, model, nested field or None) for the parent and each child table."""
    yield f"finance.{endpoint.name}", endpoint.model, None
    for field, model in endpoint.children.items():
        yield f"finance.{endpoint.name}__{field}", model, field


def expected_rows(sb: Sandbox, endpoint: Endpoint, field: str | None) -> list[dict]:
    records = sb.records(endpoint.name)
    if field is None:
        return records
    return [dict(item, parent_id=r["id"]) for r in records for item in (r[field] or [])]


def live_rows(endpoint: Endpoint, table: str, field: str | None) -> str:
    """SQL for the rows of records that still exist (soft-deleted ones stay in the table)."""
    parent = f"finance.{endpoint.name}"
    if field is None:
        return f"(select * from {parent} where _deleted_at is null)"
    return (
        f"(select * from {table} where parent_id in "
        f"(select id from {parent} where _deleted_at is null))"
    )


def assert_warehouse_equals_sandbox(sb: Sandbox, database: Path) -> None:
    """Live rows equal the sandbox's data: counts, ids, exact money sums, null counts."""
    with duckdb.connect(str(database), read_only=True) as conn:
        for endpoint in ENDPOINTS:
            for table, model, field in tables_of(endpoint):
                rows = expected_rows(sb, endpoint, field)
                live = live_rows(endpoint, table, field)
                got = conn.execute(f"select count(*) from {live}").fetchone()[0]
                assert got == len(rows), table
                for column in decimal_fields(model):
                    want = sum((r[column] for r in rows if r[column] is not None), Decimal(0))
                    total = conn.execute(f"select coalesce(sum({column}), 0) from {live}")
                    assert Decimal(total.fetchone()[0]) == want, f"{table}.{column}"
                for column in model.model_fields:
                    if column in endpoint.children:
                        continue
                    want_nulls = sum(1 for r in rows if r.get(column) is None)
                    nulls = conn.execute(f"select count(*) from {live} where {column} is null")
                    assert nulls.fetchone()[0] == want_nulls, f"{table}.{column} nulls"
            live = live_rows(endpoint, "", None)
            ids = {r[0] for r in conn.execute(f"select id from {live}").fetchall()}
            assert ids == {r["id"] for r in sb.records(endpoint.name)}, endpoint.name


def snapshot(database: Path) -> dict[str, list]:
    """Every data table's rows except the load time, for 'nothing changed' comparisons."""
    out = {}
    with duckdb.connect(str(database), read_only=True) as conn:
        tables = conn.execute(
            "select table_name from information_schema.tables where table_schema = 'finance' "
            "and table_name not like '\\_%' escape '\\'"  # data tables, not bookkeeping
        ).fetchall()
        for (table,) in tables:
            described = conn.execute(f"select * from finance.{table} limit 0").description
            columns = [d[0] for d in described if d[0] != "_loaded_at"]
            select = ", ".join(f'"{c}"' for c in columns)
            out[table] = conn.execute(
                f"select {select} from finance.{table} order by all"
            ).fetchall()
    return out



def shipped_definitions() -> dg.Definitions:
    """The definitions as Dagster loads them (the defs folder), from the environment now."""
    from finance_assets.definitions import defs

    return defs()


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


def failure_headline(result: dg.ExecuteInProcessResult) -> str:
    """The sentence a failed run shows as its headline (the op's ``dg.Failure``)."""
    failures = result.get_step_failure_events()
    assert failures, "the run did not fail"
    user_failure = failures[0].step_failure_data.user_failure_data
    assert user_failure is not None, failure_message(result)
    return str(user_failure.description)


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
