"""Where the per-record time goes: decode, validate, stage, merge (no network in the timing).

    python -m benchmarks.profile_records --scale 5 [--cprofile 25] [--pyinstrument]

Fetches every page of the 16 endpoints from an in-process sandbox first, then runs
the project's per-record path on the bytes in memory, endpoint by endpoint, as
``sync.load_endpoint`` does: the columnar reader first, and for the pages it
declines ``json.loads(parse_float=Decimal)``, ``records.validation.validate_page``,
``columns_from_records`` and ``warehouse.Writer.add``; then the writer's merge on exit,
into a temporary DuckDB file (one endpoint at a time from one Python thread, DuckDB with
its own threads: the figures are the path's cost, not the wall time of a concurrent load).
Prints seconds per stage and, with ``--cprofile N``, the N costliest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import httpx

from finance_assets.endpoints import ENDPOINTS, Endpoint
from finance_assets.records import columnar
from finance_assets.records.page_columns import columns_from_records
from finance_assets.records.validation import validate_page
from finance_assets.sandbox import Sandbox, SandboxConfig
from finance_assets.warehouse import Warehouse

PER_PAGE = 200


def fetch_pages(sandbox: Sandbox) -> dict[str, list[bytes]]:
    """The raw bodies of every page, per endpoint."""
    form = {"grant_type": "refresh_token", "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret, "refresh_token": sandbox.refresh_token}
    pages: dict[str, list[bytes]] = defaultdict(list)
    with httpx.Client(base_url=sandbox.base_url, timeout=60) as http:
        token = http.post(sandbox.token_url, data=form).raise_for_status().json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        for endpoint in ENDPOINTS:
            number = 1
            while True:
                body = http.get(endpoint.path, params={"page": number, "per_page": PER_PAGE})
                pages[endpoint.name].append(body.content)
                ctx = json.loads(body.content)["page_context"]
                if not ctx["has_more_page"]:
                    break
                number += 1
    return pages


def run_path(pages: dict[str, list[bytes]], database: Path) -> dict[str, float]:
    """The per-record path over all pages; seconds per stage."""
    spent: dict[str, float] = defaultdict(float)
    clock = time.perf_counter
    with duckdb.connect(str(database)) as conn:
        warehouse = Warehouse(conn)
        for endpoint in ENDPOINTS:
            load(endpoint, pages[endpoint.name], warehouse, spent, clock)
    return spent


def load(endpoint: Endpoint, bodies: list[bytes], warehouse: Warehouse,
         spent: dict[str, float], clock) -> None:  # noqa: ANN001 - perf_counter
    loaded_at = datetime.now(timezone.utc)
    decode = columnar.reader_for(endpoint)
    t0 = clock()
    with warehouse.writer(endpoint, loaded_at) as writer:
        spent["writer setup"] += clock() - t0
        for content in bodies:
            t = clock()
            page = decode(content) if decode is not None else None
            t1 = clock()
            spent["columnar decode + checks (all pages)"] += t1 - t
            if page is not None:
                writer.add(page.columns)
                spent["Writer.add (stage)"] += clock() - t1
                continue
            t = clock()
            records = json.loads(content, parse_float=Decimal)[endpoint.data_selector]
            t1 = clock()
            valid, bad = validate_page(endpoint.model, records)
            t2 = clock()
            writer.add(columns_from_records(endpoint, valid))
            writer.reject(bad)
            t3 = clock()
            spent["pydantic path: json.loads, Decimal"] += t1 - t
            spent["pydantic path: validate_page"] += t2 - t1
            spent["pydantic path: columns, Writer.add"] += t3 - t2
        t_exit = clock()
    spent["merge + commit (writer exit)"] += clock() - t_exit


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_records", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=5.0)
    p.add_argument("--cprofile", type=int, default=0, metavar="N",
                   help="also run under cProfile and print the N costliest functions")
    p.add_argument("--pyinstrument", action="store_true", help="also print a pyinstrument tree")
    args = p.parse_args()
    with Sandbox(SandboxConfig(scale=args.scale)) as sandbox:
        pages = fetch_pages(sandbox)
    n_pages = sum(len(v) for v in pages.values())
    n_bytes = sum(len(b) for v in pages.values() for b in v)
    n_records = sum(
        len(json.loads(b)[e.data_selector]) for e in ENDPOINTS for b in pages[e.name]
    )
    print(f"{n_records:,} records in {n_pages:,} pages, {n_bytes / 2**20:,.1f} MiB of JSON")
    with tempfile.TemporaryDirectory(prefix="finance-profile-") as tmp:
        started = time.perf_counter()
        spent = run_path(pages, Path(tmp) / "plain.duckdb")
        total = time.perf_counter() - started
        print(f"\nper-record path, no profiler: {total:.2f} s, {n_records / total:,.0f} records/s")
        for stage, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
            print(f"  {stage:32s} {seconds:7.2f} s  {seconds / total:6.1%}  "
                  f"{seconds / n_records * 1e6:7.1f} us/record")
        if args.cprofile:
            profiler = cProfile.Profile()
            profiler.enable()
            run_path(pages, Path(tmp) / "cprofile.duckdb")
            profiler.disable()
            print(f"\ncProfile, top {args.cprofile} by own time:")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.cprofile)
            print(f"\ncProfile, top {args.cprofile} by cumulative time:")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.cprofile)
        if args.pyinstrument:
            from pyinstrument import Profiler

            with Profiler(interval=0.001) as profiler:
                run_path(pages, Path(tmp) / "pyinstrument.duckdb")
            print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
