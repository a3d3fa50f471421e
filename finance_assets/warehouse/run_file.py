"""The DuckDB file of a run's own, where its pages wait for the merge.

A run stages outside the warehouse so it never holds the warehouse while it fetches
(``window.py``). The file lives in a temporary folder named after the run's process,
removed when the run ends; a run that was killed cannot remove its own, so each run
first removes the folders of processes that no longer exist.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

FOLDER_PREFIX = "finance-run-"
_OWNER = re.compile(rf"^{FOLDER_PREFIX}(\d+)-")


def abandoned_run_folders(parent: str | None = None) -> list[Path]:
    """Run folders whose process is gone (killed runs' staging files)."""
    out = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        owner = _OWNER.match(folder.name)
        if owner and not _alive(int(owner.group(1))):
            out.append(folder)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextmanager
def run_database(config: Mapping[str, Any] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh DuckDB file for this run, in a folder removed afterwards (``config``: DuckDB
    settings, e.g. the warehouse resource's)."""
    for folder in abandoned_run_folders():
        shutil.rmtree(folder, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    try:
        conn = duckdb.connect(str(Path(folder) / "staging.duckdb"), config=dict(config or {}))
        try:
            yield conn
        finally:
            conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
