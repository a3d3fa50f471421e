"""Several organizations side by side: N partition runs together, one after another, and
one organization as large as all of them.

    python -m benchmarks.organizations [--organizations 8] [--scale 1] [--limits 300,...]

Each organization is a sandbox server of its own (a separate ``python -m
finance_assets.sandbox`` process: its own seed, credentials and ``--rate-limit``),
declared by URL in an organizations file (``FINANCE_ORGANIZATIONS_FILE``) with the same
``rate_limit_per_minute``. Three scenarios, each with fresh sandboxes, a fresh warehouse
and a fresh ``DAGSTER_HOME``:

- **A, together**: one ``dg launch --job finance_daily --partition <key>`` per
  organization, all started at once, all writing one warehouse;
- **B, one after another**: the same runs, each started when the previous one ended;
- **C, one large organization**: one sandbox at N times the scale (as many records),
  one ``dg launch``, with a limit of its own (by default the sum of the N limits: the
  same total quota).

Measured: wall time (first start to last end), records landed, peak RSS of each run's
process tree and of their sum (sampled together), and from each sandbox's
``/__sandbox/stats``, polled while the runs go: requests, tokens, 429s, and the request
rate over the span in which the counter rose (first to last poll that saw it change),
as a fraction of that organization's limit. Each organization's rows per table are
checked against its sandbox's records. The report goes to stdout and to
``benchmarks/results/organizations_<N>x<scale>.md``, with the machine's figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import httpx
import yaml

from benchmarks.common import (
    dagster_home,
    load_average,
    machine,
    proc_trees_rss,
    sandbox_command,
    sandbox_counts,
    sandbox_processes,
)
from finance_assets.endpoints import ENDPOINTS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
POLL_SECONDS = 0.1
MiB = 2**20


@dataclass
class Org:
    """One organization: its partition key, sandbox data and limit."""

    key: str
    seed: int
    scale: float
    limit: int

    @property
    def env_prefix(self) -> str:
        return self.key.upper()

    @property
    def credentials(self) -> tuple[str, str, str]:
        """Its own client id, secret and refresh token (benchmark values, guard nothing)."""
        return (f"{self.key}-client", f"{self.key}-secret", f"{self.key}-refresh")

    def declaration(self, base_url: str) -> dict:
        return {
            "key": self.key,
            "base_url": base_url,
            "token_url": base_url + "/oauth/v2/token",
            "client_id_env": f"{self.env_prefix}_CLIENT_ID",
            "client_secret_env": f"{self.env_prefix}_CLIENT_SECRET",
            "refresh_token_env": f"{self.env_prefix}_REFRESH_TOKEN",
            "rate_limit_per_minute": self.limit,
        }

    def secrets(self) -> dict[str, str]:
        client_id, secret, refresh = self.credentials
        return {
            f"{self.env_prefix}_CLIENT_ID": client_id,
            f"{self.env_prefix}_CLIENT_SECRET": secret,
            f"{self.env_prefix}_REFRESH_TOKEN": refresh,
        }


@dataclass
class Run:
    """One partition run and what its sandbox saw."""

    org: Org
    start: float = 0.0
    end: float = 0.0
    code: int | None = None
    peak_rss: int = 0
    requests: int = 0
    tokens: int = 0
    rate_limited: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, requests so far)
    log: Path | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def fetch_span(self) -> tuple[float, float, int] | None:
        """(first, last, requests between): the first poll that saw requests and the first
        that saw them all; the counts at both are exact, so the slope needs no guess."""
        final = self.requests
        rising = [(t, n) for t, n in self.samples if n > 0]
        if final <= 0 or not rising:
            return None
        first = rising[0]
        last = next(((t, n) for t, n in rising if n >= final), rising[-1])
        if last[0] <= first[0]:
            return None
        return first[0], last[0], last[1] - first[1]

    def rate(self) -> float | None:
        """Requests per minute while fetching."""
        span = self.fetch_span()
        return span[2] / (span[1] - span[0]) * 60 if span else None

    def after_last_request(self) -> float | None:
        """Seconds from the last request to the run's end: merges, checks, lock waits, exit."""
        span = self.fetch_span()
        return self.end - span[1] if span else None


@dataclass
class Scenario:
    name: str
    runs: list[Run]
    seconds: float = 0.0
    peak_sum_rss: int = 0  # largest sum over the runs' trees at one sample
    records: int = 0
    expected: int = 0
    mismatches: list[str] = field(default_factory=list)
    load: str = ""

    @property
    def ok(self) -> bool:
        return all(r.code == 0 for r in self.runs) and not self.mismatches


def organizations(count: int, scale: float, limits: list[int]) -> list[Org]:
    return [Org(f"org{i + 1}", seed=i + 1, scale=scale, limit=limits[i]) for i in range(count)]


def spread_limits(count: int, low: int = 300, high: int = 1000) -> list[int]:
    if count == 1:
        return [high]
    return [round(low + (high - low) * i / (count - 1)) for i in range(count)]


def expected_rows(base_url: str) -> dict[str, int]:
    """Records per resource the sandbox serves (its admin API; not counted as requests)."""
    counts = {}
    with httpx.Client(timeout=120) as client:
        for endpoint in ENDPOINTS:
            response = client.get(f"{base_url}/__sandbox/records/{endpoint.name}")
            response.raise_for_status()
            counts[endpoint.name] = len(response.json())
    return counts


def warehouse_rows(database: Path) -> dict[tuple[str, str], int]:
    """Rows per (organization, resource) in the warehouse's parent tables."""
    rows: dict[tuple[str, str], int] = {}
    if not database.exists():
        return rows
    with duckdb.connect(str(database), read_only=True) as conn:
        for endpoint in ENDPOINTS:
            try:
                found = conn.execute(
                    f'SELECT _organization, count(*) FROM finance."{endpoint.name}" GROUP BY 1'
                ).fetchall()
            except duckdb.Error:
                continue
            for org, n in found:
                rows[(org, endpoint.name)] = n
    return rows


class Monitor:
    """Polls, every POLL_SECONDS, the RSS of the running runs' trees (one /proc pass) and
    each sandbox's request counter; keeps each run's peak and the peak of their sum."""

    def __init__(self, runs: list[Run], base_urls: list[str]) -> None:
        self.runs = runs
        self.base_urls = base_urls
        self.pids: dict[int, int] = {}  # run index -> pid while it runs
        self.baseline = [sandbox_counts(url)[0] for url in base_urls]
        self.peak_sum = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def running(self, index: int, pid: int | None) -> None:
        with self._lock:
            if pid is None:
                self.pids.pop(index, None)
            else:
                self.pids[index] = pid

    def _loop(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                with self._lock:
                    running = dict(self.pids)
                if running:
                    sizes = proc_trees_rss(list(running.values()))
                    for index, size in zip(running, sizes, strict=True):
                        run = self.runs[index]
                        run.peak_rss = max(run.peak_rss, size)
                    self.peak_sum = max(self.peak_sum, sum(sizes))
                now = time.perf_counter()
                for run, url, base in zip(self.runs, self.base_urls, self.baseline, strict=True):
                    try:
                        count = client.get(url + "/__sandbox/stats").json()["api_requests"]
                    except httpx.HTTPError:
                        continue
                    run.samples.append((now, count - base))
                self._stop.wait(POLL_SECONDS)


def launch(run: Run, index: int, env: dict[str, str], work: Path, monitor: Monitor) -> None:
    """``dg launch`` of the run's partition; blocks until it ends."""
    dg = Path(sys.executable).with_name("dg")
    cmd = [str(dg), "launch", "--job", "finance_daily", "--partition", run.org.key]
    run.log = work / f"{run.org.key}.log"
    with open(run.log, "w") as log:
        run.start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        monitor.running(index, proc.pid)
        run.code = proc.wait()
        run.end = time.perf_counter()
        monitor.running(index, None)


def scenario(
    name: str, orgs: list[Org], together: bool, work: Path, say: Callable[[str], None]
) -> Scenario:
    """Fresh sandboxes, warehouse and DAGSTER_HOME; the runs together or in turn."""
    work.mkdir(parents=True)
    commands = [sandbox_command(o.scale, o.seed, rate_limit=o.limit, credentials=o.credentials)
                for o in orgs]
    started = time.perf_counter()
    with sandbox_processes(commands) as urls:
        say(f"  {len(urls)} sandbox(es) up in {time.perf_counter() - started:.1f}s")
        expected = {o.key: expected_rows(url) for o, url in zip(orgs, urls, strict=True)}
        (work / "organizations.yaml").write_text(yaml.safe_dump(
            {"organizations": [o.declaration(u) for o, u in zip(orgs, urls, strict=True)]},
            sort_keys=False,
        ))
        database = work / "warehouse.duckdb"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCE_")}
        env.update({
            "DAGSTER_HOME": str(dagster_home(work)),
            "VIRTUAL_ENV": sys.prefix,  # dg checks it runs in the project's environment
            "FINANCE_DUCKDB_PATH": str(database),
            "FINANCE_ORGANIZATIONS_FILE": str(work / "organizations.yaml"),
        })
        for o in orgs:
            env.update(o.secrets())
        # The instance exists before its runs, as in a deployment: N `dg launch` on an empty
        # DAGSTER_HOME would race to create its SQLite storage (alembic's version table).
        dagster = Path(sys.executable).with_name("dagster")
        subprocess.run([str(dagster), "instance", "migrate"], env=env, cwd=PROJECT_ROOT,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs = [Run(o) for o in orgs]
        before = [sandbox_counts(url) for url in urls]
        result = Scenario(name, runs, load=load_average())
        with Monitor(runs, urls) as monitor:
            if together:
                threads = [threading.Thread(target=launch, args=(r, i, env, work, monitor))
                           for i, r in enumerate(runs)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            else:
                for i, r in enumerate(runs):
                    launch(r, i, env, work, monitor)
            time.sleep(2 * POLL_SECONDS)  # a last poll of the counters
        result.peak_sum_rss = monitor.peak_sum
        result.seconds = max(r.end for r in runs) - min(r.start for r in runs)
        for r, url, b in zip(runs, urls, before, strict=True):
            after = sandbox_counts(url)
            r.requests, r.tokens, r.rate_limited = (a - x for a, x in zip(after, b, strict=True))
            if r.code != 0:
                tail = r.log.read_text(errors="replace").strip().splitlines()[-3:]
                say(f"  {r.org.key} FAILED (exit {r.code}): {' / '.join(tail)[-300:]}")
    landed = warehouse_rows(database)
    result.records = sum(landed.values())
    for o in orgs:
        for resource, n in expected[o.key].items():
            result.expected += n
            got = landed.get((o.key, resource), 0)
            if got != n:
                result.mismatches.append(f"{o.key}.{resource}: {got} rows, sandbox {n}")
    say(f"  {result.seconds:.1f}s, {result.records:,} records "
        f"({'match' if not result.mismatches else f'{len(result.mismatches)} MISMATCHES'})")
    return result


# ---------- report ----------
def _mib(n: int) -> str:
    return f"{n / MiB:,.0f}"


def _fraction(run: Run) -> str:
    rate = run.rate()
    return f"{rate / run.org.limit:.2f}" if rate is not None else "-"


def summary_table(scenarios: list[Scenario]) -> str:
    rows = [
        "| scenario | wall s | records (= sandboxes) | records/s | peak RSS MiB, largest run "
        "| peak RSS MiB, sum of runs at once | API requests | tokens | 429s | load at start |",
        "|" + "---|" * 10,
    ]
    for s in scenarios:
        check = "yes" if not s.mismatches else f"NO, {len(s.mismatches)} differ"
        failed = sum(r.code != 0 for r in s.runs)
        name = s.name + (f" ({failed} run(s) FAILED)" if failed else "")
        rows.append(
            f"| {name} | {s.seconds:.1f} | {s.records:,} ({check}) | "
            f"{s.records / s.seconds if s.seconds else 0:,.0f} | "
            f"{_mib(max(r.peak_rss for r in s.runs))} | {_mib(s.peak_sum_rss)} | "
            f"{sum(r.requests for r in s.runs):,} | {sum(r.tokens for r in s.runs)} | "
            f"{sum(r.rate_limited for r in s.runs)} | {s.load} |"
        )
    return "\n".join(rows)


def runs_table(scenarios: list[Scenario]) -> str:
    rows = [
        "| scenario | organization | limit /min | run s | requests | fetching s | "
        "requests/min while fetching | / limit | 429s | after last request s | peak RSS MiB |",
        "|" + "---|" * 11,
    ]
    for s in scenarios:
        for r in s.runs:
            span = r.fetch_span()
            tail = r.after_last_request()
            rate = r.rate()
            rows.append(
                f"| {s.name.split(',')[0]} | {r.org.key} (scale {r.org.scale:g}) | {r.org.limit} | "
                f"{r.seconds:.1f} | {r.requests} | "
                f"{f'{span[1] - span[0]:.1f}' if span else '-'} | "
                f"{f'{rate:.0f}' if rate is not None else '-'} | {_fraction(r)} | "
                f"{r.rate_limited} | {f'{tail:.1f}' if tail is not None else '-'} | "
                f"{_mib(r.peak_rss)} |"
            )
    return "\n".join(rows)


def report(args: argparse.Namespace, orgs: list[Org], big: Org, scenarios: list[Scenario]) -> str:
    limits = ", ".join(str(o.limit) for o in orgs)
    lines = [
        f"# Benchmark: {len(orgs)} organizations at scale {args.scale:g}, side by side",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`python -m benchmarks.organizations {' '.join(sys.argv[1:])}`. Organizations "
        f"{orgs[0].key}..{orgs[-1].key}: seeds 1..{len(orgs)}, limits {limits} requests/min "
        f"(each enforced by its own sandbox and declared as its `rate_limit_per_minute`); "
        f"the large organization: scale {big.scale:g}, seed {big.seed}, limit {big.limit}/min.",
        "",
        summary_table(scenarios),
        "",
        runs_table(scenarios),
        "",
        "Wall time runs from the first `dg launch` to the last one's exit (interpreter start, "
        "code loading and the 48 checks included; sandbox start-up and the creation of the "
        "scenario's Dagster instance, `dagster instance migrate`, not). Peak RSS is each "
        "`dg launch` process tree's, and the largest sum over the runs' trees at one sample "
        f"(/proc, every {POLL_SECONDS * 1000:.0f} ms); the sandboxes' own memory is not "
        "counted. Requests, tokens and 429s are the sandboxes' counts. The request rate is "
        "the sandbox's counter between the first poll that saw a request and the first that "
        "saw the last one, per minute; 'after last request' is from then to the run's exit "
        "(the last merges and checks, any wait for the warehouse, Dagster's teardown). "
        "Records: rows of the 16 parent tables; every organization's rows per table equal "
        "its sandbox's records in each scenario marked yes. The load average is the "
        "machine's (1, 5, 15 min) when the scenario started: other work shares the CPUs.",
        "",
    ]
    mismatches = [f"- {s.name}: {m}" for s in scenarios for m in s.mismatches[:10]]
    if mismatches:
        lines += ["Mismatches:", "", *mismatches, ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in machine().items()] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.organizations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--organizations", type=int, default=8)
    p.add_argument("--scale", type=float, default=1.0, help="each organization's sandbox size")
    p.add_argument("--limits", default=None,
                   help="comma list of requests/min, one per organization (default: spread "
                   "evenly from 300 to 1000)")
    p.add_argument("--large-limit", type=int, default=None,
                   help="the large organization's requests/min (default: the sum of the limits)")
    p.add_argument("--scenarios", default="ABC", help="which of A, B, C to run (default ABC)")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)

    limits = ([int(x) for x in args.limits.split(",")] if args.limits
              else spread_limits(args.organizations))
    if len(limits) != args.organizations:
        p.error(f"--limits gives {len(limits)} limits for {args.organizations} organizations")
    orgs = organizations(args.organizations, args.scale, limits)
    big = Org("whole", seed=1, scale=args.scale * args.organizations,
              limit=args.large_limit or sum(limits))

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    plan = {
        "A": (f"A, {len(orgs)} runs together", orgs, True),
        "B": (f"B, {len(orgs)} runs one after another", orgs, False),
        "C": (f"C, one organization at scale {big.scale:g}", [big], False),
    }
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="finance-bench-orgs-") as tmp:
        for letter in args.scenarios.upper():
            name, members, together = plan[letter]
            say(f"scenario {name} (load {load_average()}) ...")
            scenarios.append(scenario(name, members, together, Path(tmp) / letter, say))
    text = report(args, orgs, big, scenarios)
    print(text)
    output = args.output or RESULTS / f"organizations_{args.organizations}x{args.scale:g}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    if not all(s.ok for s in scenarios):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
