"""The main job on the sandbox: start it, materialize all sixteen assets, print a summary.

Runs the real Dagster path (``dagster job execute``) in a child process against a
sandbox API served from this one, then reads the warehouse it produced.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

from finance_assets.definitions import DEFAULT_DUCKDB_PATH
from finance_assets.endpoints import ENDPOINTS
from finance_assets.sandbox import Sandbox, SandboxConfig
from finance_assets.warehouse import summary_rows

# INFO, not DEBUG: one line per endpoint and check instead of every step event.
QUIET_RUN_CONFIG = "loggers:\n  console:\n    config:\n      log_level: INFO\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", default=os.getenv("FINANCE_DUCKDB_PATH", DEFAULT_DUCKDB_PATH))
    parser.add_argument("--scale", type=float, default=1.0, help="sandbox size (1 = ~20k records)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    home = Path(os.getenv("DAGSTER_HOME") or ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    Path(args.database).parent.mkdir(parents=True, exist_ok=True)

    with Sandbox(SandboxConfig(seed=args.seed, scale=args.scale)) as sb:
        print(f"sandbox API at {sb.base_url} (seed {args.seed}, scale {args.scale})", flush=True)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "FINANCE_DUCKDB_PATH": args.database,
            "FINANCE_API_BASE_URL": sb.base_url,
            "FINANCE_API_TOKEN_URL": sb.token_url,
            "FINANCE_API_CLIENT_ID": sb.client_id,
            "FINANCE_API_CLIENT_SECRET": sb.client_secret,
            "FINANCE_API_REFRESH_TOKEN": sb.refresh_token,
        }
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as run_config:
            run_config.write(QUIET_RUN_CONFIG)
            run_config.flush()
            command = [
                sys.executable, "-m", "dagster", "job", "execute",
                "-m", "finance_assets.definitions", "-j", "finance_daily", "-c", run_config.name,
            ]  # fmt: skip
            status = subprocess.run(command, env=env, check=False).returncode

    with duckdb.connect(args.database, read_only=True) as conn:
        rows = summary_rows(conn, ENDPOINTS)
    print(f"\nWarehouse {args.database}:")
    print(f"{'table':<42}{'rows':>10}")
    for table, count in rows:
        print(f"{table:<42}{count:>10}")
    print("job succeeded" if status == 0 else f"job FAILED (exit {status}); see the log above")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
