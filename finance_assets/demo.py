"""The main job on the sandbox: materialize all sixteen assets with their checks, build
the finance marts, then print what landed, the AR aging totals and the KPIs, and the
check report of the instance it used.

Runs the real Dagster path (``dg launch --job finance_daily``) in a child process with
the sandbox chosen explicitly, so the demo never reads a configured API and never
writes the file that real runs use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

from finance_assets.endpoints import ENDPOINTS
from finance_assets.sandbox.data import EDGE_AS_OF
from finance_assets.warehouse import summary_rows

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGSTER_HOME = PROJECT_ROOT / "dagster_home"  # its dagster.yaml turns telemetry off
DEFAULT_DATABASE = "data/sandbox.duckdb"
# INFO, not DEBUG: one line per endpoint and check instead of every step event.
QUIET_RUN_CONFIG = "loggers:\n  console:\n    config:\n      log_level: INFO\n"
# The sandbox's books end on this day: the marts are built as of it, so the aging and the
# 90-day figures describe its books rather than a year and more of silence after them.
MARTS_RUN_CONFIG = (
    f"ops:\n  build_finance_marts:\n    config:\n      as_of: '{EDGE_AS_OF.isoformat()}'\n"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="the sandbox's DuckDB file")
    args = parser.parse_args(argv)

    home = Path(os.getenv("DAGSTER_HOME") or DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FINANCE_")},
        "DAGSTER_HOME": str(home),
        "VIRTUAL_ENV": sys.prefix,  # dg checks it runs in the project's environment
        "FINANCE_SOURCE": "sandbox",
        "FINANCE_DUCKDB_PATH": args.database,
    }
    dg = Path(sys.executable).with_name("dg")
    status = 0
    # The marts' automation builds them after a sync when the daemon runs (dg dev); the
    # demo has no daemon, so it launches their job itself.
    for job, extra in (("finance_daily", ""), ("finance_marts", MARTS_RUN_CONFIG)):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as run_config:
            run_config.write(QUIET_RUN_CONFIG + extra)
            run_config.flush()
            command = [str(dg), "launch", "--job", job, "--config", run_config.name]
            shown = f", as of {EDGE_AS_OF}" if extra else ""
            print(f"$ dg launch --job {job}   (sandbox, {args.database}{shown})", flush=True)
            ran = subprocess.run(command, env=env, cwd=PROJECT_ROOT, check=False).returncode
            status = status or ran

    database = PROJECT_ROOT / args.database
    if not database.exists():
        print(f"job FAILED (exit {status}) before writing {args.database}; see the log above")
        return status or 1
    with duckdb.connect(str(database), read_only=True) as conn:
        print(f"\nWarehouse {args.database}:")
        print(f"{'table':<42}{'rows':>10}")
        for table, count in summary_rows(conn, ENDPOINTS):
            print(f"{table:<42}{count:>10}")
        print_marts(conn)
    print("jobs succeeded" if status == 0 else f"a job FAILED (exit {status}); see the log above")
    # The report's exit code is for cron and CI (make report); the demo's stays the job's.
    print(f"\n$ python -m finance_assets.report   (DAGSTER_HOME={home})", flush=True)
    report = [sys.executable, "-m", "finance_assets.report"]
    subprocess.run(report, env=env, cwd=PROJECT_ROOT, check=False)
    return status


def print_marts(conn: duckdb.DuckDBPyConnection) -> None:
    """The AR aging totals and the KPIs of the latest as-of date, if the marts were built."""
    if not conn.execute("SELECT 1 FROM duckdb_tables() WHERE schema_name = 'marts' "
                        "AND table_name = 'finance_kpis'").fetchall():  # fmt: skip
        return
    aging = conn.execute(
        """SELECT organization, as_of, count(*), sum("current"), sum(days_1_30),
                  sum(days_31_60), sum(days_61_90), sum(days_over_90), sum(total)
           FROM marts.ar_aging WHERE as_of = (SELECT max(as_of) FROM marts.ar_aging)
           GROUP BY ALL ORDER BY 1"""
    ).fetchall()
    print("\nAR aging (marts.ar_aging, base currency):")
    print(f"{'organization':<14}{'as_of':<12}{'customers':>10}{'current':>16}{'1-30':>14}"
          f"{'31-60':>14}{'61-90':>14}{'over 90':>22}{'total':>22}")
    for org, as_of, n, *amounts in aging:
        widths = (16, 14, 14, 14, 22, 22)
        print(f"{org:<14}{as_of!s:<12}{n:>10}"
              + "".join(f"{a:>{w}}" for a, w in zip(amounts, widths, strict=True)))
    cursor = conn.execute(
        "SELECT * EXCLUDE (accounts_without_rate) FROM marts.finance_kpis "
        "WHERE as_of = (SELECT max(as_of) FROM marts.finance_kpis) ORDER BY organization"
    )
    names = [d[0] for d in cursor.description]
    print("\nKPIs (marts.finance_kpis):")
    for row in cursor.fetchall():
        for name, value in zip(names, row, strict=True):
            print(f"  {name:<16}{value!s:>24}")


if __name__ == "__main__":
    raise SystemExit(main())
