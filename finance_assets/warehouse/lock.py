"""Open the DuckDB file for writing, waiting a bounded time while another process holds it.

DuckDB allows one writing process per file; a second one fails at once with an
``IOException`` about a conflicting lock. A run that starts while another is
writing should wait its turn for a while and then fail with one sentence that
says what to do, rather than a DuckDB traceback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import duckdb

T = TypeVar("T")

_LOCK_CONFLICT = re.compile(r"Could not set lock on file|Conflicting lock", re.IGNORECASE)
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")


class WarehouseBusyError(RuntimeError):
    """Another process kept the DuckDB file locked for longer than we were willing to wait."""


def is_lock_conflict(exc: BaseException) -> bool:
    """True if DuckDB refused to open the file because another process holds its lock."""
    return isinstance(exc, duckdb.Error) and bool(_LOCK_CONFLICT.search(str(exc)))


def connect_waiting(
    database: str,
    timeout: float = 60.0,
    poll: float = 0.25,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **connect_kwargs: Any,
) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` that retries a lock conflict for up to ``timeout`` seconds.

    Any other error is raised as it is. After the timeout: ``WarehouseBusyError``.
    """
    return open_waiting(
        lambda: duckdb.connect(database, **connect_kwargs), database, timeout, poll,
        sleep=sleep, clock=clock,
    )  # fmt: skip


def open_waiting(
    open_file: Callable[[], T],
    database: str,
    timeout: float = 60.0,
    poll: float = 0.25,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``open_file()`` (a connect or an ATTACH of ``database``), retrying a lock conflict
    for up to ``timeout`` seconds; then ``WarehouseBusyError``."""
    started = clock()
    while True:
        try:
            return open_file()
        except duckdb.Error as exc:
            if not is_lock_conflict(exc):
                raise
            waited = clock() - started
            if waited + poll > timeout:
                pid = _HOLDER_PID.search(str(exc))
                holder = f" (PID {pid.group(1)})" if pid else ""
                raise WarehouseBusyError(
                    f"the DuckDB file {database} is in use by another process{holder} and "
                    f"stayed locked for {waited:.0f}s; let that run finish (or stop it) and "
                    "retry, or run one writer at a time with `dagster instance concurrency "
                    "set finance_duckdb 1`."
                ) from None
            sleep(poll)


@contextmanager
def locked_connection(
    database: str, timeout: float = 60.0, **connect_kwargs: Any
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A writing connection for a ``with`` block (waits as ``connect_waiting``); closed after."""
    conn = connect_waiting(database, timeout, **connect_kwargs)
    try:
        yield conn
    finally:
        conn.close()
