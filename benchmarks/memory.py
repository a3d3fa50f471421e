"""Peak memory and wall time of the project run, two code trees or settings alternated.

    python -m benchmarks.memory --scale 150 --repeat 3 \
        --variant before=PATH_OF_AN_OLDER_CHECKOUT --variant after=.

One sandbox process serves every run (it is not counted); each run is ``dagster asset
materialize`` of all sixteen assets into a fresh DuckDB file, measured as
``benchmarks.run`` measures its project row (whole process tree, RSS sampled from
/proc). Variants run alternately, so a busy machine slows each about equally; the
table gives every run and the medians. A variant is ``name=TREE`` (the tree's
``finance_assets`` is imported first) and may add, after commas, environment
variables (upper case) and fields of the run config (lower case):
``unbounded=.,memory_limit_mb=0``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import (
    ENDPOINTS,
    INGESTION,
    api_env,
    count_records,
    dagster_home,
    run_measured,
    sandbox_process,
)


def _variant(text: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = text.partition("=")
    tree, *pairs = rest.split(",")
    extra = dict(p.split("=", 1) for p in pairs)
    return name, Path(tree or ".").resolve(), extra


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--variant", action="append", required=True, type=_variant)
    p.add_argument("--base-url", help="a sandbox already serving this scale and seed")
    p.add_argument("--keep", type=Path, help="keep each run's log in this directory")
    args = p.parse_args(argv)
    dagster = Path(sys.executable).with_name("dagster")
    launcher = [str(dagster)] if dagster.exists() else [sys.executable, "-m", "dagster"]
    cmd = [*launcher, "asset", "materialize", "-m", "finance_assets.definitions",
           "--select", INGESTION]
    runs: dict[str, list[tuple[float, int, int]]] = {v[0]: [] for v in args.variant}
    with (
        tempfile.TemporaryDirectory(prefix="finance-memory-", dir=args.keep) as tmp,
        (
            contextlib.nullcontext(args.base_url)
            if args.base_url
            else sandbox_process(args.scale, 0.0, None, args.seed)
        ) as base_url,
    ):
        work = Path(tmp)
        for i in range(args.repeat):
            for name, tree, extra in args.variant:
                run_dir = work / f"{name}-{i}"
                run_dir.mkdir()
                database = run_dir / "warehouse.duckdb"
                env = api_env(base_url)
                env.update({k: v for k, v in extra.items() if k.isupper()})
                config = {k: json.loads(v) for k, v in extra.items() if not k.isupper()}
                run_cmd = cmd
                if config:
                    ops = {"ops": {"sync_finance_records": {"config": config}}}
                    run_cmd = [*cmd, "--config-json", json.dumps(ops)]
                env["FINANCE_DUCKDB_PATH"] = str(database)
                env["DAGSTER_HOME"] = str(dagster_home(run_dir))
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree),
                                                                  env.get("PYTHONPATH")]))
                seconds, peak, _, code, _ = run_measured(run_cmd, env, str(run_dir),
                                                         run_dir / "run.log")
                records = count_records(database, [e.name for e in ENDPOINTS])
                if code != 0:
                    tail = (run_dir / "run.log").read_text(errors="replace")[-1500:]
                    print(f"{name} run {i + 1} FAILED (exit {code}):\n{tail}", file=sys.stderr)
                runs[name].append((seconds, peak, records))
                print(f"{name} run {i + 1}: {seconds:.2f} s, {peak / 2**20:.0f} MiB, "
                      f"{records:,} records", file=sys.stderr, flush=True)
                database.unlink(missing_ok=True)
                if args.keep:
                    (args.keep / f"{name}-{i}.log").write_bytes((run_dir / "run.log").read_bytes())
                time.sleep(1)
    print(f"| scale {args.scale:g} | runs: wall s / peak RSS MiB | median wall s | "
          "median peak MiB | records |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        each = ", ".join(f"{s:.1f} / {m / 2**20:.0f}" for s, m, _ in rs)
        print(f"| {name} | {each} | {statistics.median(s for s, _, _ in rs):.1f} | "
              f"{statistics.median(m for _, m, _ in rs) / 2**20:.0f} | {rs[-1][2]:,} |")


if __name__ == "__main__":
    main()
