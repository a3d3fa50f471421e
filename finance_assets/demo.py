"""The main job on the sandbox: materialize all sixteen assets with their checks, then
print what landed and the check report of the instance it used.

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
from finance_assets.warehouse import summary_rows

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGSTER_HOME = PROJECT_ROOT / "dagster_home"  # its dagster.yaml turns telemetry off
DEFAULT_DATABASE = "data/sandbox.duckdb"
# INFO, not DEBUG: one line per endpoint and check instead of every step event.
QUIET_RUN_CONFIG = "loggers:\n  console:\n    config:\n      log_level: INFO\n"


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
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as run_config:
        run_config.write(QUIET_RUN_CONFIG)
        run_config.flush()
        command = [str(dg), "launch", "--job", "finance_daily", "--config", run_config.name]
        print(f"$ dg launch --job finance_daily   (sandbox, into {args.database})", flush=True)
        status = subprocess.run(command, env=env, cwd=PROJECT_ROOT, check=False).returncode

    database = PROJECT_ROOT / args.database
    if not database.exists():
        print(f"job FAILED (exit {status}) before writing {args.database}; see the log above")
        return status or 1
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = summary_rows(conn, ENDPOINTS)
    print(f"\nWarehouse {args.database}:")
    print(f"{'table':<42}{'rows':>10}")
    for table, count in rows:
        print(f"{table:<42}{count:>10}")
    print("job succeeded" if status == 0 else f"job FAILED (exit {status}); see the log above")
    # The report's exit code is for cron and CI (make report); the demo's stays the job's.
    print(f"\n$ python -m finance_assets.report   (DAGSTER_HOME={home})", flush=True)
    report = [sys.executable, "-m", "finance_assets.report"]
    subprocess.run(report, env=env, cwd=PROJECT_ROOT, check=False)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
