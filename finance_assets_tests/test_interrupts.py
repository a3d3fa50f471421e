"""Killed and concurrent runs: real ``dagster`` processes, a real DuckDB file lock.

A run killed with SIGKILL while it is writing leaves every table as it was and
the next run completes the work; two runs at once never corrupt or duplicate a
table; a run that meets a locked file fails (or waits) cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from finance_assets.endpoints import ENDPOINTS
from finance_assets.warehouse import (
    STAGING_SCHEMA,
    WarehouseBusyError,
    abandoned_run_folders,
    connect_waiting,
)
from finance_assets_tests.harness import (
    SCALE,
    SYNC_OP,
    api_for,
    assert_warehouse_equals_sandbox,
    cli_env,
    cli_output,
    run,
    snapshot,
    start_cli,
)

CLI_TIMEOUT = 120


def hold_lock(database: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that opens the file for writing, says so, and holds it ``seconds``."""
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
        "print('ready', flush=True); time.sleep(float(sys.argv[2]))"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(database), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    return holder


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    """Lock holders started by a test, ended (by their pid) at teardown."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for holder in started:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGKILL a CLI run and its step process (one process group) and wait until all are gone.

    The step process is not our child, so its exit (which frees the DuckDB lock) is
    awaited by polling the group.
    """
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError("the killed run's processes did not exit")


# ---------- the lock helper (finance_assets.warehouse.lock) ----------
def test_busy_file_fails_after_the_bounded_wait_with_one_sentence(tmp_path, holders) -> None:
    database = tmp_path / "w.duckdb"
    holders.append(hold_lock(database, 30))
    started = time.monotonic()
    with pytest.raises(WarehouseBusyError) as info:
        connect_waiting(str(database), timeout=0.6, poll=0.1)
    assert 0.5 <= time.monotonic() - started < 3
    message = str(info.value)
    assert "\n" not in message and f"PID {holders[0].pid}" in message
    assert "in use by another process" in message and "finance_duckdb 1" in message


def test_busy_file_is_waited_for_until_released(tmp_path, holders) -> None:
    database = tmp_path / "w.duckdb"
    holders.append(hold_lock(database, 0.8))
    started = time.monotonic()
    conn = connect_waiting(str(database), timeout=20, poll=0.1)
    try:
        assert time.monotonic() - started >= 0.3  # it really waited for the holder
        conn.execute("create table t as select 1 as x")
    finally:
        conn.close()


def test_other_duckdb_errors_are_not_retried(tmp_path) -> None:
    with pytest.raises(duckdb.Error):
        connect_waiting(str(tmp_path / "missing" / "w.duckdb"), timeout=5, read_only=True)


# ---------- real dagster processes ----------
def test_killed_run_leaves_tables_as_before_and_next_run_completes(
    make_sandbox, tmp_path
) -> None:
    sb = make_sandbox(scale=0.1)  # bills: 250 records, two pages
    database = tmp_path / "w.duckdb"
    assert run(api_for(sb), database).success
    before = snapshot(database)

    changed = sb.mutate("bills", updates=250)  # every bill changes: a full two-page read
    assert len(changed["updated"]) == 250
    sb.configure(latency=0.5)  # each call takes 0.5 s: the kill lands mid-resource
    sb.reset_stats()
    work = tmp_path / "run"
    proc = start_cli(cli_env(sb, database, tmp_path / "home"), work)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while sb.stats()["requests"].get("/v1/bills", {}).get("200", 0) < 1:
            assert proc.poll() is None, cli_output(work)
            assert time.monotonic() < deadline, "the run never reached bills"
            time.sleep(0.02)
        time.sleep(0.2)  # page 1 is staged in the open transaction; page 2 is in flight
        served = sb.stats()["requests"]["/v1/bills"].get("200", 0)
        assert proc.poll() is None
    finally:
        kill_group(proc)  # the CLI and its step process, by group id
    assert proc.returncode == -signal.SIGKILL
    assert served == 1  # killed between the two pages of bills (page 2 was never received)

    assert snapshot(database) == before  # nothing half-written, the file opens cleanly
    assert staging_table_count(database) == 0  # staging never lives in the warehouse
    left = abandoned_run_folders()  # the killed run's own staging file, in its folder
    assert any((folder / "staging.duckdb").exists() for folder in left)
    sb.configure(latency=0.0)
    assert run(api_for(sb), database).success
    assert_warehouse_equals_sandbox(sb, database)
    assert snapshot(database) != before
    assert not any(folder.exists() for folder in left)  # the next run removed them


def staging_table_count(database: Path) -> int:
    with duckdb.connect(str(database), read_only=True) as conn:
        (count,) = conn.execute(
            "select count(*) from duckdb_tables() where schema_name = ?", [STAGING_SCHEMA]
        ).fetchone()
    return count


def test_two_runs_at_once_never_corrupt_or_duplicate(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=SCALE, latency=0.1)  # each run takes seconds: they overlap
    database = tmp_path / "w.duckdb"
    procs = {
        name: start_cli(cli_env(sb, database, tmp_path / name / "home"), tmp_path / name)
        for name in ("a", "b")
    }
    try:
        codes = {name: p.wait(timeout=CLI_TIMEOUT) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                kill_group(p)
    assert 0 in codes.values(), {n: cli_output(tmp_path / n)[-3000:] for n in procs}
    for name, code in codes.items():
        if code != 0:  # the loser met the writer's lock, and said so
            assert "Could not set lock" in cli_output(tmp_path / name)
    assert_warehouse_equals_sandbox(sb, database)  # counts and ids: no duplicate, no loss
    with duckdb.connect(str(database), read_only=True) as conn:
        for endpoint in ENDPOINTS:
            dup = conn.execute(
                f"select count(*) - count(distinct id) from finance.{endpoint.name}"
            ).fetchone()
            assert dup == (0,), endpoint.name


def test_a_run_waits_for_a_writer_that_holds_the_file(make_sandbox, tmp_path, holders) -> None:
    """DuckDBResource retries a held lock with exponential backoff (0.1 s, doubling, 10 times:
    about 100 s in all), so a run that starts while another writes waits its turn."""
    sb = make_sandbox(scale=SCALE)
    database = tmp_path / "w.duckdb"
    holders.append(hold_lock(database, 1.0))
    started = time.monotonic()
    result = run(api_for(sb), database, ["taxes"])
    assert result.success
    assert time.monotonic() - started >= 0.7  # it waited for the holder, then wrote
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute("select count(*) from finance.taxes").fetchone()
    assert rows == (len(sb.records("taxes")),)


def test_materialization_on_a_busy_file_fails_with_one_sentence(
    make_sandbox, tmp_path, holders
) -> None:
    """The asset waits its bounded time for the file, then fails with the sentence as headline."""
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from finance_assets.assets import build_finance_assets

    sb = make_sandbox(scale=0.02)
    database = tmp_path / "w.duckdb"
    holders.append(hold_lock(database, 30))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [build_finance_assets()],
            selection=["users"],
            resources={
                "finance_api": api_for(sb),
                "duckdb": DuckDBResource(database=str(database)),
            },
            run_config={"ops": {SYNC_OP: {"config": {"warehouse_lock_timeout_seconds": 1}}}},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert "in use by another process" in error.message and "\n" not in error.message.strip()
    assert sb.stats()["api_requests"] == 0  # nothing fetched for a file it cannot write
