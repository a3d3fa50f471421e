"""A run's DuckDB memory, bounded whatever the size of the books it loads.

A run goes into a pod or worker with a memory limit, so its peak must not grow with
the data. Python's side is bounded by construction (pages fetched ahead, rows buffered
per staging table); DuckDB's is not: by default it may use 80% of the machine's memory,
and it keeps every block it has written or read cached up to that limit, so staging
and merging a resource of a million records held hundreds of MiB that were never
needed again. ``bound_memory`` caps DuckDB's memory: blocks already in a database file
are dropped from the cache (and read again if needed), and what exists only in memory
(uncommitted rows, TEMP tables, large joins and sorts) spills to a directory on disk.

The bound covers the whole DuckDB instance, every database attached to it included, so
a run that stages into a file of its own and attaches the warehouse to merge is
bounded by one call on its connection.
"""

from __future__ import annotations

import duckdb

# The default bound: the run's DuckDB memory for staging and merging, whatever the size
# of the organization's books (benchmarks/README.md has the peak and the wall-time cost).
DEFAULT_MEMORY_LIMIT_MB = 64


def bound_memory(
    conn: duckdb.DuckDBPyConnection, limit_mb: int, spill_dir: str | None = None
) -> None:
    """Cap the memory of ``conn``'s DuckDB instance at ``limit_mb`` MiB, spilling the rest.

    The settings are DuckDB's global ones: they hold for every connection and cursor of
    the instance and for every database attached to it, so call it once on the run's
    connection before anything is staged. ``limit_mb`` 0 leaves DuckDB's own defaults.
    ``spill_dir`` is where DuckDB writes what does not fit (default: next to the
    database file, ``<file>.tmp``; for ``:memory:``, ``.tmp`` in the working
    directory); it must be writable, and DuckDB removes its files when done. A
    ``memory_limit`` in the ``DuckDBResource``'s ``connection_config`` is overridden
    unless ``limit_mb`` is 0.
    """
    if limit_mb < 0:
        raise ValueError(f"memory limit {limit_mb} MiB is below 0; use 0 for no bound")
    if limit_mb == 0:
        return
    conn.execute(f"SET GLOBAL memory_limit = '{int(limit_mb)}MiB'")
    if spill_dir is not None:
        conn.execute("SET GLOBAL temp_directory = ?", [spill_dir])
