"""One command for the speed-and-scale benchmark: raw floor, the project, dlt.

    python -m benchmarks.run --scale 5 [--latency 0.1] [--rate-limit R] [--with-dlt]

Starts the sandbox API as a separate process at the given scale, then measures,
one after another against that same server:

1. **raw floor**: a plain sequential httpx loop that fetches and JSON-parses every
   page of the 16 endpoints (``benchmarks/raw_floor.py``);
2. **project**: the real Dagster path, ``dagster asset materialize -m
   finance_assets.definitions --select group:finance`` (the sixteen assets), with a
   fresh DuckDB file and ``DAGSTER_HOME``;
3. **dlt** (``--with-dlt``, when ``dlt`` is importable): ``rest_api`` with the seed
   configuration (``benchmarks/dlt_load.py``).

Each runs in its own process tree, so wall time and peak RSS are the whole cost
(interpreter start and imports included). Requests come from the sandbox's
``/__sandbox/stats`` before and after. The table goes to stdout and to
``benchmarks/results/latest.md`` (plus a file named after the settings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import (
    dagster_home,
    machine,
    rss_method,
    sandbox_counts,
    sandbox_process,
    tree_rss,
)
from finance_assets.endpoints import ENDPOINTS
from finance_assets.sandbox import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_SECONDS = 0.05


@dataclass
class Measurement:
    """One benchmarked run: wall time, records, peak memory and what the API saw."""

    name: str
    seconds: float
    records: int
    peak_rss: int  # bytes, whole process tree
    peak_pss: int  # bytes; shared pages split between processes (0: not measured)
    rss_method: str
    api_requests: int
    tokens: int
    rate_limited: int
    ok: bool
    note: str = ""

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def run_measured(cmd: list[str], env: dict[str, str], cwd: str, log: Path) -> tuple[
    float, int, int, int, str
]:
    """Run ``cmd``; wall seconds, peak tree RSS and PSS (bytes), exit code and stdout."""
    started = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err,
                                text=True)
        peak = peak_pss = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, peak_pss
            while not done.is_set():
                rss, pss = tree_rss(proc.pid)
                peak, peak_pss = max(peak, rss), max(peak_pss, pss)
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = proc.communicate()
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    if peak == 0:  # no sampling possible: the largest child so far (not the tree's sum)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (
            1 if sys.platform == "darwin" else 1024
        )
    return seconds, peak, peak_pss, proc.returncode, out


def last_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return {}


def count_records(database: Path, names: list[str]) -> int:
    """Rows in the 16 parent tables of a DuckDB file (schema ``finance``)."""
    import duckdb

    if not database.exists():
        return 0
    total = 0
    with duckdb.connect(str(database), read_only=True) as conn:
        for name in names:
            with contextlib.suppress(duckdb.Error):
                total += conn.execute(f'select count(*) from finance."{name}"').fetchone()[0]
    return total


# ---------- the three contenders ----------
def api_env(base_url: str, rate_limit: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if rate_limit is not None:  # the project is told the limit the sandbox enforces
        env["FINANCE_API_RATE_LIMIT_PER_MINUTE"] = str(rate_limit)
    env.update({
        "FINANCE_API_BASE_URL": base_url,
        "FINANCE_API_TOKEN_URL": base_url + "/oauth/v2/token",
        "FINANCE_API_CLIENT_ID": DEMO_CLIENT_ID,
        "FINANCE_API_CLIENT_SECRET": DEMO_CLIENT_SECRET,
        "FINANCE_API_REFRESH_TOKEN": DEMO_REFRESH_TOKEN,
    })
    return env


def measure(name: str, base_url: str, cmd: list[str], env: dict[str, str], work: Path,
            records_from: Path | None = None) -> Measurement:
    before = sandbox_counts(base_url)
    log = work / f"{name.replace(' ', '_')}.log"
    seconds, peak, pss, code, out = run_measured(cmd, env, str(work), log)
    after = sandbox_counts(base_url)
    if records_from is not None:
        records = count_records(records_from, [e.name for e in ENDPOINTS])
    else:
        records = int(last_json(out).get("records", 0))
    note = ""
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        note = f"exit {code}: " + " / ".join(tail)[-300:]
        print(f"  {name} FAILED ({note}); full log: {log}", file=sys.stderr)
    return Measurement(
        name, seconds, records, peak, pss, rss_method(), after[0] - before[0], after[1] - before[1],
        after[2] - before[2], code == 0, note,
    )


def raw_floor(base_url: str, work: Path) -> Measurement:
    cmd = [sys.executable, "-m", "benchmarks.raw_floor"]
    env = api_env(base_url)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(RESULTS.parent.parent),
                                                      env.get("PYTHONPATH")]))
    return measure("raw floor", base_url, cmd, env, work)


# The sixteen assets of the ingestion (the finance marts, downstream, are not loading).
INGESTION = "group:finance"


def project(
    base_url: str, work: Path, database: Path, name: str = "project", rate_limit: int | None = None
) -> Measurement:
    """``dagster asset materialize`` of all 16 assets into ``database``."""
    dagster = Path(sys.executable).with_name("dagster")
    launcher = [str(dagster)] if dagster.exists() else [sys.executable, "-m", "dagster"]
    cmd = [*launcher, "asset", "materialize", "-m", "finance_assets.definitions",
           "--select", INGESTION]
    env = api_env(base_url, rate_limit)
    env["FINANCE_DUCKDB_PATH"] = str(database)
    env["DAGSTER_HOME"] = str(dagster_home(work))
    return measure(name, base_url, cmd, env, work, records_from=database)


def dagster_floor(base_url: str, work: Path) -> Measurement:
    """The same asset graph doing no work: Dagster's own cost per run."""
    dagster = Path(sys.executable).with_name("dagster")
    launcher = [str(dagster)] if dagster.exists() else [sys.executable, "-m", "dagster"]
    cmd = [*launcher, "asset", "materialize", "-m", "benchmarks.dagster_floor", "--select", "*"]
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home(work / "floor"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(RESULTS.parent.parent),
                                                      env.get("PYTHONPATH")]))
    return measure("dagster floor (no work)", base_url, cmd, env, work)


def dlt_available() -> bool:
    try:
        import dlt  # noqa: F401
    except ImportError:
        return False
    return True


def dlt_run(base_url: str, work: Path) -> Measurement:
    env = api_env(base_url)
    env["BENCH_DLT_DUCKDB"] = str(work / "dlt.duckdb")
    env["BENCH_DLT_PIPELINES_DIR"] = str(work / "dlt_pipelines")
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(RESULTS.parent.parent),
                                                      env.get("PYTHONPATH")]))
    return measure("dlt rest_api", base_url, [sys.executable, "-m", "benchmarks.dlt_load"],
                   env, work)


# ---------- report ----------
def ratio(value: float, base: Measurement | None) -> str:
    if base is None or not base.ok or not base.seconds:
        return "-"
    return f"{value / base.seconds:.2f}x"


def table(results: list[Measurement]) -> str:
    floor = next((r for r in results if r.name == "raw floor"), None)
    dlt_m = next((r for r in results if r.name.startswith("dlt")), None)
    head = ("| run | wall s | records | records/s | peak RSS MiB | peak PSS MiB | API requests "
            "| tokens | 429s | vs raw floor | vs dlt |")
    rows = [head, "|" + "---|" * 11]
    for r in results:
        name = r.name if r.ok else f"{r.name} (FAILED)"
        rows.append(
            f"| {name} | {r.seconds:.2f} | {r.records:,} | {r.records_per_second:,.0f} | "
            f"{r.peak_rss / 2**20:,.0f} | "
            f"{f'{r.peak_pss / 2**20:,.0f}' if r.peak_pss else '-'} | {r.api_requests:,} | "
            f"{r.tokens} | {r.rate_limited} | "
            f"{ratio(r.seconds, floor)} | {ratio(r.seconds, dlt_m)} |"
        )
    return "\n".join(rows)


def report(args: argparse.Namespace, results: list[Measurement], startup: float) -> str:
    settings = f"scale {args.scale:g}, seed {args.seed}, latency {args.latency:g} s"
    settings += f", rate limit {args.rate_limit}/min" if args.rate_limit else ", no rate limit"
    lines = [
        f"# Benchmark: {settings}",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`python -m benchmarks.run {' '.join(sys.argv[1:])}`.",
        "",
        table(results),
        "",
        "Wall time and peak RSS cover each run's whole process tree (interpreter start and "
        f"imports included; RSS and PSS summed over the tree by {rss_method()}, sampled every "
        f"{SAMPLE_SECONDS * 1000:.0f} ms; summed RSS counts pages that forked workers share once "
        "per process, PSS splits them). "
        "Requests, tokens and 429s are the sandbox's own counts. Ratios are wall-time ratios "
        f"(lower is faster). The sandbox took {startup:.1f} s to generate its data and start "
        "(not counted).",
        "",
    ]
    floor = next((r for r in results if r.name == "raw floor" and r.ok), None)
    fixed = next((r for r in results if r.name.startswith("dagster floor") and r.ok), None)
    proj = next((r for r in results if r.name == "project" and r.ok), None)
    if floor and fixed and proj:
        own = proj.seconds - fixed.seconds
        lines += [
            f"The project's own work (project less the Dagster floor): {own:.2f} s = "
            f"{own / floor.seconds:.2f}x the raw floor; Dagster's fixed cost per run is "
            f"{fixed.seconds:.2f} s = {fixed.seconds / floor.seconds:.2f}x the raw floor.",
            "",
        ]
    if args.rate_limit:
        lines += [f"Throughput against the limit R = {args.rate_limit}/min (wall time, start-up "
                  "included):", ""]
        lines += [
            f"- {r.name}: {r.api_requests / r.seconds * 60:.1f} requests/min = "
            f"{r.api_requests / r.seconds * 60 / args.rate_limit:.2f} R, {r.rate_limited} 429s"
            for r in results if r.seconds and r.api_requests
        ]
        lines.append("")
    notes = [f"- {r.name}: {r.note}" for r in results if r.note]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in machine().items()] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="sandbox size; 1 = ~20,000 records")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added per API call")
    p.add_argument("--rate-limit", type=int, default=None, help="sandbox requests per minute")
    p.add_argument("--with-dlt", action="store_true", help="also run dlt's rest_api source")
    p.add_argument("--skip-project", action="store_true", help="only the raw floor (and dlt)")
    p.add_argument("--incremental", action="store_true",
                   help="then materialize again into the same DuckDB with nothing changed")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    args = p.parse_args(argv)

    results: list[Measurement] = []
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="finance-bench-") as tmp,
        sandbox_process(args.scale, args.latency, args.rate_limit, args.seed) as base_url,
    ):
        startup = time.perf_counter() - started
        work = Path(tmp)
        print(f"sandbox up at {base_url} after {startup:.1f}s", file=sys.stderr)
        # Under a rate limit the reference is R itself, and a floor run would spend the
        # window the project is measured in (one window per client): no floor then.
        steps = [] if args.rate_limit else [("raw floor", lambda: raw_floor(base_url, work))]
        if not args.skip_project:
            steps.append(("dagster floor", lambda: dagster_floor(base_url, work)))
        database = work / "warehouse.duckdb"
        if not args.skip_project:
            steps.append(
                ("project", lambda: project(base_url, work, database, rate_limit=args.rate_limit))
            )
            if args.incremental:
                # Hook for the planned "nothing changed" measurement: a second run on the
                # same warehouse and Dagster instance (what it reads is the project's call).
                steps.append(("project, again (nothing changed)",
                              lambda: project(base_url, work, database,
                                              "project, again (nothing changed)")))
        if args.with_dlt:
            if dlt_available():
                steps.append(("dlt", lambda: dlt_run(base_url, work)))
            else:
                print("dlt is not importable; skipping it (pip install 'dlt[duckdb]')",
                      file=sys.stderr)
        for label, step in steps:
            print(f"running {label} ...", file=sys.stderr, flush=True)
            results.append(step())
            print(f"  {results[-1].seconds:.2f}s, {results[-1].records:,} records",
                  file=sys.stderr)
    text = report(args, results, startup)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    name = f"scale{args.scale:g}"
    name += f"_latency{args.latency:g}" if args.latency else ""
    name += f"_ratelimit{args.rate_limit}" if args.rate_limit else ""
    name += "_dlt" if args.with_dlt else ""
    (args.output.parent / f"{name}.md").write_text(text)


if __name__ == "__main__":
    main()
