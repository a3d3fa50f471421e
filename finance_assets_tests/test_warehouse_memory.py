"""Staging on disk: pages are committed batch by batch to staging tables, the merge is one
transaction, and none of it is ever visible as data or left behind.

Staging used to live in TEMP tables inside the resource's one transaction, so peak
memory grew with the largest resource. These tests hold the new shape to the old
guarantees: a failure at any point leaves every table of the ``finance`` schema as it
was, readers never see a half-merged resource, results and stats do not depend on how
pages were batched, and a crashed writer's staging tables are dropped by the next run.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import typing
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from finance_assets import assets as assets_module
from finance_assets import models as m
from finance_assets.assets import build_finance_assets
from finance_assets.records.page_columns import columns_from_records
from finance_assets.warehouse import MergeStep, Warehouse, Writer, order_key
from finance_assets.warehouse.memory import bound_memory
from finance_assets.warehouse.merge import Merge
from finance_assets_tests.harness import SYNC_OP, assert_warehouse_equals_sandbox, sandbox_api
from finance_assets_tests.warehouse_helpers import (
    BILLS,
    INVOICES,
    LOADED_AT,
    Rej,
    finance_tables,
    make,
    staging_tables,
    temp_tables,
    write,
)

LATER = LOADED_AT + dt.timedelta(days=1)
TINY_MB = 32  # far below DuckDB's default (80% of the machine's memory)


@pytest.fixture
def conn(tmp_path: Path) -> typing.Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield c
    c.close()


# ---------- staging is committed, invisible as data, and dropped ----------
def test_staged_pages_are_committed_to_disk_and_never_visible_as_data(conn) -> None:
    first = make(m.Invoice)
    write(conn, INVOICES, [first])
    before = finance_tables(conn)
    with Warehouse(conn).writer(INVOICES, LATER, flush_rows=1) as w:
        w.add(columns_from_records(INVOICES, [make(m.Invoice), make(m.Invoice)]))
        w.add(columns_from_records(INVOICES, [first.model_copy(update={"total": Decimal("0.01")})]))
        # Each flush committed on its own: another cursor sees the staged rows ...
        staged = staging_tables(conn)
        assert sorted(staged.values()) == [0, 3, 6]  # quarantine, parents, line items
        assert all(name.startswith("_stage__invoices") for name in staged)
        # ... no TEMP table holds them, and the resource's tables are untouched.
        assert temp_tables(conn) == 0
        with conn.cursor() as reader:
            assert finance_tables(reader) == before
    assert w.stats.committed and (w.stats.inserted, w.stats.updated) == (2, 1)
    assert staging_tables(conn) == {}
    assert temp_tables(conn) == 0
    assert conn.execute("SELECT count(*) FROM finance.invoices").fetchone() == (3,)


@pytest.mark.parametrize("where", ["while staging", "after the merge", "in the sync state"])
def test_failure_after_staging_commits_leaves_every_table_unchanged(conn, where: str) -> None:
    a, b = make(m.Invoice), make(m.Invoice)
    write(conn, INVOICES, [a, b])
    with Warehouse(conn).writer(INVOICES, LOADED_AT) as w:
        w.reject([Rej("77", {"id": "77"}, "total: not a decimal")])
        w.set_cursor(LOADED_AT)
    before = finance_tables(conn)
    assert set(before) >= {"_rejected", "_sync_state", "invoices", "invoices__line_items"}
    # Every merge statement has run by COMMIT; the sync state is saved near the end.
    failing_step = {
        "after the merge": MergeStep.COMMIT,
        "in the sync state": MergeStep.SAVE_SYNC_STATE,
    }

    def fail(step: MergeStep) -> None:
        if step is failing_step.get(where):
            raise OSError("disk full")

    writer = Writer(
        conn, INVOICES, LATER, flush_rows=1, full_refresh=True, before_merge_statement=fail
    )
    with pytest.raises(OSError, match="disk full"):
        with writer as w:
            w.add(
                columns_from_records(
                    INVOICES, [a.model_copy(update={"total": Decimal("0.01"), "line_items": []})]
                )
            )
            w.add(columns_from_records(INVOICES, [make(m.Invoice) for _ in range(3)]))
            w.reject([Rej("77", {"id": "77"}, "newer"), Rej(None, {"x": 1}, "id: null")])
            w.seen_range("", "~")  # b missing from a full pass: would be marked deleted
            w.set_cursor(LATER)
            assert sum(staging_tables(conn).values()) > 0  # committed batches exist
            if where == "while staging":
                raise OSError("disk full")
    assert finance_tables(conn) == before  # data, children, quarantine, cursor
    assert staging_tables(conn) == {}
    assert temp_tables(conn) == 0
    assert not w.stats.committed
    write(conn, INVOICES, [make(m.Invoice)])  # the connection is usable afterwards
    assert conn.execute("SELECT count(*) FROM finance.invoices").fetchone() == (3,)


def test_schema_drift_fails_before_anything_is_staged(conn) -> None:
    write(conn, INVOICES, [make(m.Invoice)])
    conn.execute("ALTER TABLE finance.invoices ADD COLUMN surprise INTEGER")
    before = finance_tables(conn)
    with pytest.raises(RuntimeError, match="schema evolution"):
        with Warehouse(conn).writer(INVOICES, LATER):
            pytest.fail("the writer must not open")
    assert finance_tables(conn) == before
    assert staging_tables(conn) == {}


def test_first_write_failing_after_staging_creates_no_finance_table(conn) -> None:
    with pytest.raises(RuntimeError), Warehouse(conn).writer(INVOICES, LOADED_AT, 1) as w:
        w.add(columns_from_records(INVOICES, [make(m.Invoice), make(m.Invoice)]))
        raise RuntimeError
    assert finance_tables(conn) == {}
    assert staging_tables(conn) == {}


# ---------- crashed writers ----------
_KILLED_WRITER = """
import datetime as dt, os, signal, sys
import duckdb
from finance_assets_tests.warehouse_helpers import INVOICES, make
from finance_assets import models as m
from finance_assets.records.page_columns import columns_from_records
from finance_assets.warehouse import Warehouse
conn = duckdb.connect(sys.argv[1])
with Warehouse(conn).writer(INVOICES, dt.datetime.now(dt.timezone.utc), flush_rows=1) as w:
    w.add(columns_from_records(INVOICES, [make(m.Invoice), make(m.Invoice)]))
    w.add(columns_from_records(INVOICES, [make(m.Invoice)]))
    os.kill(os.getpid(), signal.SIGKILL)  # mid-write: batches committed, no merge
"""


def test_leftover_staging_of_a_killed_writer_is_dropped_by_the_next_run(tmp_path) -> None:
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as c:
        write(c, INVOICES, [make(m.Invoice)])
        before = finance_tables(c)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(database)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    with duckdb.connect(str(database)) as c:
        leftover = staging_tables(c)
        assert sum(leftover.values()) == 9  # 3 invoices, 6 line items: committed, not merged
        assert finance_tables(c) == before  # never visible as data
        # The next run drops them when it opens the file, before any writer starts.
        assert Warehouse(c).drop_leftover_staging() == len(leftover) == 3
        write(c, BILLS, [make(m.Bill)])
        assert staging_tables(c) == {}
        assert finance_tables(c)["invoices"] == before["invoices"]
        write(c, INVOICES, [make(m.Invoice)])
        assert c.execute("SELECT count(*) FROM finance.invoices").fetchone() == (2,)


def test_a_live_writer_keeps_its_staging_while_another_writer_starts(conn) -> None:
    """Writers of one process on other cursors (even of the same resource) never collide."""
    ours, theirs = make(m.Invoice), make(m.Invoice)
    with ExitStack() as stack:
        mine = stack.enter_context(conn.cursor())
        other = stack.enter_context(conn.cursor())
        w = stack.enter_context(Warehouse(mine).writer(INVOICES, LOADED_AT, flush_rows=1))
        w.add(columns_from_records(INVOICES, [ours]))
        with pytest.raises(RuntimeError):  # its start and its cleanup spare w's tables
            with Warehouse(other).writer(INVOICES, LOADED_AT, flush_rows=1) as w2:
                w2.add(columns_from_records(INVOICES, [theirs]))
                assert len(staging_tables(conn)) == 2 * 3
                raise RuntimeError
        assert sorted(staging_tables(conn).values()) == [0, 1, 2]
        w.add(columns_from_records(INVOICES, [make(m.Invoice)]))
    assert w.stats.committed and w.stats.inserted == 2
    ids = {r[0] for r in conn.execute("SELECT id FROM finance.invoices").fetchall()}
    assert ours.id in ids and theirs.id not in ids
    assert staging_tables(conn) == {}


def test_concurrent_writers_on_cursors_of_one_connection(conn) -> None:
    Warehouse(conn).ensure_tables(INVOICES)
    Warehouse(conn).ensure_tables(BILLS)
    pages = {
        INVOICES.name: [[make(m.Invoice) for _ in range(3)] for _ in range(5)],
        BILLS.name: [[make(m.Bill) for _ in range(3)] for _ in range(5)],
    }
    barrier = threading.Barrier(2)
    stats: dict[str, Any] = {}
    errors: list[BaseException] = []

    def load(endpoint: Any) -> None:
        try:
            with conn.cursor() as own, Warehouse(own).writer(endpoint, LOADED_AT, 2) as w:
                for page in pages[endpoint.name]:
                    barrier.wait(timeout=30)  # interleave the two writers' staging
                    w.add(columns_from_records(endpoint, page))
            stats[endpoint.name] = w.stats
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=load, args=(e,)) for e in (INVOICES, BILLS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert stats["invoices"].inserted == stats["bills"].inserted == 15
    assert conn.execute("SELECT count(*) FROM finance.invoices").fetchone() == (15,)
    assert conn.execute("SELECT count(*) FROM finance.bills").fetchone() == (15,)
    assert staging_tables(conn) == {}


# ---------- results do not depend on the batching ----------
def _scenario(conn: duckdb.DuckDBPyConnection, flush_rows: int, records: list[Any]) -> list[Any]:
    """Two writes (incremental, then a full refresh) with duplicates, children, rejections."""
    a, b, c, gone = records
    out = []
    with Warehouse(conn).writer(INVOICES, LOADED_AT, flush_rows=flush_rows) as w:
        w.add(columns_from_records(INVOICES, [a, b]))
        w.add(
            columns_from_records(
                INVOICES, [gone, a.model_copy(update={"total": Decimal("0.07")})]
            )
        )  # a again: last wins
        w.reject([Rej("77", {"id": "77", "amount": Decimal("1.10")}, "total: not a decimal")])
        w.reject([Rej("77", {"id": "77"}, "newer reason"), Rej(None, {"id": None}, "id: null")])
        w.set_cursor(LOADED_AT - dt.timedelta(minutes=5))
    out.append(w.stats)
    keys = sorted(order_key(r.created_time, r.id) for r in (a, b, c, gone))
    with Warehouse(conn).writer(INVOICES, LATER, flush_rows, full_refresh=True) as w:
        w.add(
            columns_from_records(
                INVOICES, [b.model_copy(update={"line_items": b.line_items[:1]}), c]
            )
        )
        w.add(columns_from_records(INVOICES, [a]))
        w.reject([Rej("1005", {"id": "1005"}, "never valid")])
        w.seen_range(keys[0], keys[-1])  # gone is missing inside the range: marked deleted
        w.set_cursor(LATER - dt.timedelta(minutes=5))
    out.append(w.stats)
    return out


def test_results_and_stats_do_not_depend_on_flush_size(tmp_path) -> None:
    records = [
        make(m.Invoice, id="1001"),
        make(m.Invoice, id="1002", total=Decimal("123456789012.34")),
        make(m.Invoice, id="1003"),
        make(m.Invoice, id="1004"),
    ]
    results = {}
    for flush_rows in (1, 2, 50_000):
        with duckdb.connect(str(tmp_path / f"w{flush_rows}.duckdb")) as c:
            stats = _scenario(c, flush_rows, records)
            results[flush_rows] = (stats, finance_tables(c))
    assert results[1] == results[2] == results[50_000]
    (first, second), tables = results[1]
    assert (first.rows_staged, first.distinct_ids, first.inserted, first.rejected) == (4, 3, 3, 3)
    assert first.child_rows == {"finance.invoices__line_items": 6}
    assert (second.inserted, second.updated, second.deleted, second.rejected) == (1, 2, 1, 1)
    assert second.child_rows == {"finance.invoices__line_items": 5}
    with duckdb.connect(str(tmp_path / "w1.duckdb")) as c:
        rows = c.execute(
            "SELECT id, total, _deleted_at IS NOT NULL FROM finance.invoices ORDER BY id"
        ).fetchall()
        assert rows == [
            ("1001", Decimal("13.34"), False),  # the full refresh's copy of a, not 0.07
            ("1002", Decimal("123456789012.34"), False),
            ("1003", Decimal("13.34"), False),
            ("1004", Decimal("13.34"), True),
        ]
    quarantine = {r[1]: r[2] for r in tables["_rejected"]}
    assert quarantine == {"77": "newer reason", None: "id: null", "1005": "never valid"}
    assert tables["_sync_state"][0][:3] == ("invoices", LATER - dt.timedelta(minutes=5), "full")


# ---------- the merge's own DuckDB session setting ----------
def _row_groups(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute("SELECT current_setting('write_buffer_row_group_count')").fetchone()[0]


@pytest.mark.parametrize("session_value", [None, 3])
def test_merge_buffers_one_row_group_and_the_session_setting_is_restored(
    conn, session_value: int | None
) -> None:
    if session_value is not None:
        conn.execute(f"SET SESSION write_buffer_row_group_count = {session_value}")
    before = _row_groups(conn)
    seen: list[int] = []

    def spy(step: MergeStep) -> None:
        if step is MergeStep.PROBE:  # once per merge, inside its transaction
            seen.append(_row_groups(conn))

    def spy_then_fail(step: MergeStep) -> None:
        spy(step)
        if step is MergeStep.SAVE_SYNC_STATE:  # and restored after a failed merge too
            raise RuntimeError("after the merge statements")

    with Writer(conn, INVOICES, LOADED_AT, before_merge_statement=spy) as w:
        w.add(columns_from_records(INVOICES, [make(m.Invoice)]))
    with pytest.raises(RuntimeError):
        with Writer(conn, INVOICES, LATER, before_merge_statement=spy_then_fail) as w:
            w.add(columns_from_records(INVOICES, [make(m.Invoice)]))
    assert seen == [1, 1]
    assert _row_groups(conn) == before
    conn.execute("SET GLOBAL write_buffer_row_group_count = 4")  # still follows the global
    assert _row_groups(conn) == (4 if session_value is None else session_value)


# ---------- the run's DuckDB memory is bounded ----------
def test_bound_memory_caps_the_instance_and_spills_to_the_given_directory(tmp_path) -> None:
    spill = tmp_path / "spill"
    with duckdb.connect(str(tmp_path / "w.duckdb")) as c:
        default = c.execute("SELECT current_setting('memory_limit')").fetchone()
        bound_memory(c, 0)  # 0: DuckDB's own default, untouched
        assert c.execute("SELECT current_setting('memory_limit')").fetchone() == default
        bound_memory(c, 64, str(spill))
        with c.cursor() as writer:  # the instance's setting: every cursor has it
            assert writer.execute(
                "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
            ).fetchone() == ("64.0 MiB", str(spill))
        with pytest.raises(ValueError, match="below 0"):
            bound_memory(c, -1)
        # What does not fit goes to the spill directory: a TEMP table of about
        # 100 MiB, more than the bound, is held there until the transaction ends.
        c.execute("BEGIN")
        c.execute("CREATE TEMP TABLE big AS SELECT md5(i::VARCHAR) AS h FROM range(2000000) t(i)")
        assert c.execute("SELECT count(*) FROM duckdb_temporary_files()").fetchone()[0] > 0
        assert any(spill.iterdir())
        assert c.execute("SELECT count(DISTINCT h) FROM big").fetchone() == (2_000_000,)
        c.execute("ROLLBACK")


def test_a_run_under_a_small_memory_bound_loads_everything_within_it(
    sandbox, tmp_path, monkeypatch
) -> None:
    """The run's setting reaches DuckDB on the run's connection, DuckDB keeps within it
    at every merge, and the books land exactly."""
    seen: list[tuple[Any, ...]] = []

    def spy(conn: duckdb.DuckDBPyConnection, limit_mb: int, spill_dir: str | None = None):
        bound_memory(conn, limit_mb, spill_dir)
        seen.append(conn.execute("SELECT current_setting('memory_limit')").fetchone())

    used: list[int] = []
    run_merge = Merge.run

    def merge_and_look(self: Merge):  # every page of the resource is staged by now
        outcome = run_merge(self)
        used.append(
            self._conn.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()[0]
        )
        return outcome

    monkeypatch.setattr(assets_module, "bound_memory", spy)
    monkeypatch.setattr(Merge, "run", merge_and_look)
    database = tmp_path / "w.duckdb"
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [build_finance_assets()],
            resources={
                "finance_api": sandbox_api(sandbox),
                "duckdb": DuckDBResource(database=str(database)),
            },
            run_config={"ops": {SYNC_OP: {"config": {"memory_limit_mb": TINY_MB}}}},
            instance=instance,
            raise_on_error=False,
        )
    assert result.success
    assert seen == [(f"{TINY_MB}.0 MiB",)]
    assert_warehouse_equals_sandbox(sandbox, database)
    assert len(used) == 16 and max(used) <= TINY_MB * 2**20
