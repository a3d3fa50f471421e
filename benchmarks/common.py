"""Pieces the benchmarks share: sandbox servers as separate processes and their counts,
the RSS of process trees, a fresh Dagster instance, and the machine's figures."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

try:
    import psutil
except ImportError:  # optional: /proc sampling stands in
    psutil = None


# ---------- sandbox servers as separate processes ----------
def sandbox_command(
    scale: float,
    seed: int,
    latency: float = 0.0,
    rate_limit: int | None = None,
    credentials: tuple[str, str, str] | None = None,
) -> list[str]:
    """``python -m finance_assets.sandbox`` on a free port; ``credentials`` is (client id,
    client secret, refresh token), the demo ones when None."""
    cmd = [sys.executable, "-m", "finance_assets.sandbox", "--port", "0", "--seed", str(seed),
           "--scale", str(scale), "--latency", str(latency)]
    if rate_limit is not None:
        cmd += ["--rate-limit", str(rate_limit)]
    if credentials is not None:
        client_id, secret, refresh = credentials
        cmd += ["--client-id", client_id, "--client-secret", secret, "--refresh-token", refresh]
    return cmd


@contextlib.contextmanager
def sandbox_processes(commands: Sequence[list[str]], timeout: float = 300) -> Iterator[list[str]]:
    """Start every sandbox command at once (each generates its data in parallel); yield
    their base URLs, in order, once each answers; stop them all on exit."""
    procs: list[subprocess.Popen[str]] = []
    found: list[threading.Event] = []
    outputs: list[list[str]] = []

    def drain(proc: subprocess.Popen[str], lines: list[str], seen: threading.Event) -> None:
        assert proc.stdout is not None  # keep reading so the pipe never fills
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("base URL:"):
                seen.set()

    try:
        for cmd in commands:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True)
            procs.append(proc)
            lines: list[str] = []
            seen = threading.Event()
            outputs.append(lines)
            found.append(seen)
            threading.Thread(target=drain, args=(proc, lines, seen), daemon=True).start()
        deadline = time.monotonic() + timeout
        urls = []
        for lines, seen in zip(outputs, found, strict=True):
            if not seen.wait(timeout=max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"a sandbox did not start: {''.join(lines)[-500:]}")
            urls.append(next(x for x in lines if x.startswith("base URL:")).split(":", 1)[1]
                        .strip())
        for base_url in urls:
            answer_deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(base_url + "/__sandbox/stats", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > answer_deadline:
                        raise
                    time.sleep(0.1)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def sandbox_process(
    scale: float, latency: float, rate_limit: int | None, seed: int
) -> Iterator[str]:
    """One sandbox with the demo credentials; yield its base URL."""
    with sandbox_processes([sandbox_command(scale, seed, latency, rate_limit)]) as urls:
        yield urls[0]


def sandbox_counts(base_url: str) -> tuple[int, int, int]:
    """API requests, tokens issued and 429s so far."""
    stats = httpx.get(base_url + "/__sandbox/stats", timeout=10).json()
    return stats["api_requests"], stats["tokens_issued"], stats["rate_limited"]


# ---------- RSS of process trees ----------
def _proc_children() -> dict[int, list[int]]:
    """Parent pid to child pids, from one pass over /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    return parents


def proc_trees_rss(pids: Sequence[int]) -> list[int]:
    """RSS (bytes) of each pid with its descendants, read from /proc in one pass (Linux)."""
    parents, page = _proc_children(), os.sysconf("SC_PAGE_SIZE")
    totals = []
    for pid in pids:
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            todo.extend(parents.get(p, []))
            try:
                with open(f"/proc/{p}/statm") as f:
                    total += int(f.read().split()[1]) * page
            except OSError:
                pass
        totals.append(total)
    return totals


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS, PSS) summed over the tree. Summed RSS counts pages shared by forked
    workers once per process; PSS splits them, so it is the fairer total."""
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0, 0
        rss = pss = 0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                info = proc.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", 0)
        return rss, pss
    if os.path.isdir("/proc"):
        return proc_trees_rss([pid])[0], 0
    return 0, 0


def rss_method() -> str:
    if psutil is not None:
        return "psutil tree"
    return "/proc tree" if os.path.isdir("/proc") else "ru_maxrss"


# ---------- a fresh Dagster instance ----------
def dagster_home(work: Path) -> Path:
    """``work/dagster_home`` with a dagster.yaml that sends no usage statistics."""
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


# ---------- the machine ----------
def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    versions = []
    for pkg in ("dagster", "duckdb", "httpx", "pydantic", "pyarrow", "dlt"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs (nproc)",
        "Memory": memory,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Versions": ", ".join(versions),
    }


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, for the report (other work on the machine)."""
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "?"
