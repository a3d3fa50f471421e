"""The merge's shortcuts give exactly the results of its general statements.

The merge probes first and skips the statements that cannot change a row: a first
load has nothing to delete, update or restore, and without a repeated id every staged
row is its id's winner (no temporary winners table, no arrival-order semi-joins).
Each scenario runs twice, once with ``merge_shortcuts=False`` (every statement runs),
and every table and stat must match; then the merge transaction is failed at each of
its statements through the writer's ``before_merge_statement`` hook, on both paths,
and every table of the ``finance`` schema must be unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from finance_assets import models as m
from finance_assets.records.page_columns import columns_from_records
from finance_assets.warehouse import (
    HIGHEST_KEY,
    LOWEST_KEY,
    STAGING_SCHEMA,
    MergeStep,
    Warehouse,
    Writer,
    WriteStats,
    order_key,
)
from finance_assets_tests.warehouse_helpers import (
    INVOICES,
    LOADED_AT,
    Rej,
    finance_tables,
    make,
    staging_tables,
    temp_tables,
)

EVERYTHING = ((LOWEST_KEY, HIGHEST_KEY),)


@dataclass(frozen=True)
class Step:
    """One resource write of a scenario."""

    pages: list[list[Any]]
    full_refresh: bool = False
    rejects: tuple[Rej, ...] = ()
    ranges: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Scenario:
    steps: list[Step]
    setup: Callable[[duckdb.DuckDBPyConnection], None] = field(default=lambda conn: None)


def _at(k: int) -> dt.datetime:
    return LOADED_AT + dt.timedelta(hours=k)


def _write(conn: Any, step: Step, k: int, **writer_options: Any) -> WriteStats:
    """One step's write; ``writer_options`` go to the ``Writer`` (the merge's seams)."""
    full = step.full_refresh
    writer = Writer(conn, INVOICES, _at(k), flush_rows=2, full_refresh=full, **writer_options)
    with writer as w:
        for page in step.pages:
            w.add(columns_from_records(INVOICES, page))
        w.reject(list(step.rejects))
        for low, high in step.ranges:
            w.seen_range(low, high)
        w.set_cursor(_at(k) - dt.timedelta(minutes=5))
    return w.stats


def _items(n: int, text: str) -> list[Any]:
    return [make(m.LineItem, description=f"{text} {i}") for i in range(n)]


def _invoice(**update: Any) -> Any:
    return make(m.Invoice).model_copy(update=update)


def _key(record: Any) -> str:
    return order_key(record.created_time, record.id)


def first_load() -> Scenario:
    a, b, c = _invoice(), _invoice(line_items=[]), _invoice()
    return Scenario([Step([[a, b], [c]], rejects=(Rej("77", {"id": "77"}, "bad total"),))])


def first_load_with_an_id_repeated_across_pages() -> Scenario:
    a, b = _invoice(line_items=_items(3, "first")), _invoice()
    a2 = a.model_copy(update={"total": Decimal("2.00"), "line_items": _items(1, "second")})
    a3 = a.model_copy(update={"total": Decimal("3.00"), "line_items": _items(2, "third")})
    return Scenario([Step([[a, b], [a2], [a3, b]])])


def first_full_refresh() -> Scenario:
    a, b = _invoice(), _invoice()
    rejects = (Rej(None, {"x": 1}, "id: null"), Rej("78", {"id": "78"}, "bad date"))
    return Scenario([Step([[a, b]], full_refresh=True, rejects=rejects, ranges=EVERYTHING)])


def reloads_over_existing_rows() -> Scenario:
    a, b, c, d = _invoice(), _invoice(), _invoice(), _invoice()
    c2 = c.model_copy(update={"total": Decimal("7.77"), "line_items": _items(1, "c2")})
    a2 = a.model_copy(update={"total": Decimal("0.01"), "line_items": []})
    return Scenario([
        Step([[a, b, c]], rejects=(Rej(d.id, {"id": d.id}, "bad total"),)),
        Step([[a], [b]], full_refresh=True, ranges=EVERYTHING),  # c gone: soft-deleted
        Step([[c2, d]]),  # c restored, d supersedes its quarantined row
        Step([[a2], [a, b], [a2]], rejects=(Rej(None, {"y": 2}, "id: null"),)),  # a repeated
        Step([[b]], full_refresh=True, ranges=((_key(b), _key(b)),)),  # a, c, d outside
        Step([[d]], full_refresh=True),  # a full pass that saw no range deletes nothing
        Step([]),  # nothing staged at all
    ])


def orphan_children_in_an_empty_parent_table() -> Scenario:
    a, b = _invoice(), _invoice()

    def orphans(conn: duckdb.DuckDBPyConnection) -> None:
        Warehouse(conn).ensure_tables(INVOICES)
        conn.execute(
            "INSERT INTO finance.invoices__line_items (parent_id, position, _organization) "
            "VALUES (?, 0, 'default'), (?, 0, 'default'), ('999', 0, 'default')",
            [a.id, a.id],
        )

    return Scenario([Step([[a, b]])], setup=orphans)


SCENARIOS = [
    first_load,
    first_load_with_an_id_repeated_across_pages,
    first_full_refresh,
    reloads_over_existing_rows,
    orphan_children_in_an_empty_parent_table,
]


class StepLog:
    """A merge hook that records the steps of each merge (a list per write)."""

    def __init__(self) -> None:
        self.merges: list[list[MergeStep]] = [[]]

    def __call__(self, step: MergeStep) -> None:
        self.merges[-1].append(step)
        if step is MergeStep.COMMIT:
            self.merges.append([])


def _play(
    database: Path, scenario: Scenario, **writer_options: Any
) -> tuple[list[WriteStats], list[dict]]:
    with duckdb.connect(str(database)) as conn:
        scenario.setup(conn)
        stats, tables = [], []
        for k, step in enumerate(scenario.steps):
            stats.append(_write(conn, step, k, **writer_options))
            tables.append(finance_tables(conn))
    return stats, tables


@pytest.mark.parametrize("build", SCENARIOS, ids=lambda b: b.__name__)
def test_shortcuts_give_exactly_the_general_results(
    tmp_path: Path, build: Callable[[], Scenario]
) -> None:
    scenario = build()  # the same records (and ids) for both runs
    shortcuts, everything = StepLog(), StepLog()
    fast = _play(tmp_path / "fast.duckdb", scenario, before_merge_statement=shortcuts)
    # The first write took the first-load shortcut: no existing row counted or deleted.
    first = set(shortcuts.merges[0])
    assert not first & {MergeStep.COUNT_CHANGES, MergeStep.DELETE_REPLACED_ROWS}
    general = _play(
        tmp_path / "general.duckdb",
        scenario,
        before_merge_statement=everything,
        merge_shortcuts=False,
    )
    assert all(MergeStep.COUNT_CHANGES in steps for steps in everything.merges[:-1])
    assert fast == general  # every stat and every row (data, children, quarantine, state)


def test_first_load_with_an_id_repeated_across_pages(tmp_path: Path) -> None:
    scenario = first_load_with_an_id_repeated_across_pages()
    (stats,), _ = _play(tmp_path / "w.duckdb", scenario)
    a = scenario.steps[0].pages[0][0]
    assert (stats.rows_staged, stats.distinct_ids, stats.inserted) == (5, 2, 2)
    assert (stats.updated, stats.restored, stats.deleted) == (0, 0, 0)
    assert stats.child_rows == {"finance.invoices__line_items": 2 + 2}  # a3's and b's
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        assert conn.execute(
            "SELECT total FROM finance.invoices WHERE id = ?", [a.id]
        ).fetchall() == [(Decimal("3.00"),)]
        assert conn.execute(
            "SELECT description FROM finance.invoices__line_items WHERE parent_id = ? "
            "ORDER BY position",
            [a.id],
        ).fetchall() == [("third 0",), ("third 1",)]


def test_reloads_count_updates_restores_and_deletes(tmp_path: Path) -> None:
    stats, tables = _play(tmp_path / "w.duckdb", reloads_over_existing_rows())
    counts = [(s.distinct_ids, s.inserted, s.updated, s.restored, s.deleted) for s in stats]
    assert counts == [
        (3, 3, 0, 0, 0),
        (2, 0, 2, 0, 1),  # c missing from the full pass
        (2, 1, 1, 1, 0),  # c back, d new
        (2, 0, 2, 0, 0),
        (1, 0, 1, 0, 0),  # only b's key was seen: a, c and d are left alone
        (1, 0, 1, 0, 0),
        (0, 0, 0, 0, 0),
    ]
    quarantined = [[(r[1], r[2]) for r in t["_rejected"]] for t in tables]
    assert [len(q) for q in quarantined] == [1, 1, 0, 1, 1, 1, 1]
    assert quarantined[-1] == [(None, "id: null")]  # d's row went when d loaded
    live = [sum(r[-2] is None for r in t["invoices"]) for t in tables]  # _deleted_at, _org..
    assert live == [3, 2, 4, 4, 4, 4, 4]


def test_orphan_children_of_a_first_load_are_replaced(tmp_path: Path) -> None:
    scenario = orphan_children_in_an_empty_parent_table()
    a = scenario.steps[0].pages[0][0]
    (stats,), _ = _play(tmp_path / "w.duckdb", scenario)
    assert (stats.inserted, stats.updated) == (2, 0)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        rows = conn.execute(
            "SELECT parent_id, count(*) FROM finance.invoices__line_items GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert dict(rows)[a.id] == 2 and dict(rows)["999"] == 1  # a's own items; other orphan kept


# ---------- a failure at any statement of the merge transaction ----------
class FailAt:
    """A merge hook that fails the n-th statement of the merge transaction (COMMIT included)."""

    def __init__(self, fail_at: int) -> None:
        self._fail_at, self.statements = fail_at, 0

    def __call__(self, step: MergeStep) -> None:
        self.statements += 1
        if self.statements == self._fail_at:
            raise OSError(f"disk full at {step.value}")


@pytest.mark.parametrize("general", [False, True], ids=["shortcuts", "general"])
@pytest.mark.parametrize("build", SCENARIOS, ids=lambda b: b.__name__)
def test_a_failure_at_any_merge_statement_leaves_every_table_as_before(
    tmp_path: Path, build: Callable[[], Scenario], general: bool
) -> None:
    scenario = build()
    path = {"merge_shortcuts": not general}
    *earlier, last = scenario.steps
    expected = _play(tmp_path / "expected.duckdb", scenario, **path)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        scenario.setup(conn)
        for k, step in enumerate(earlier):
            _write(conn, step, k, **path)
        before = finance_tables(conn)
        fail_at = 0
        while True:
            fail_at += 1
            failing = FailAt(fail_at)
            try:
                stats = _write(conn, last, len(earlier), before_merge_statement=failing, **path)
            except OSError:
                assert finance_tables(conn) == before, f"statement {fail_at}"
                assert staging_tables(conn) == {} and temp_tables(conn) == 0
                continue
            assert failing.statements < fail_at  # every statement was failed once
            break
        assert fail_at > 6
        assert (stats, finance_tables(conn)) == (expected[0][-1], expected[1][-1])


def test_staging_is_dropped_inside_the_merge_transaction(tmp_path: Path) -> None:
    """So a checkpoint the commit triggers never writes staged rows to the file."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        staged_at_commit: list[int] = []

        def count_staging_at_commit(step: MergeStep) -> None:
            if step is MergeStep.COMMIT:
                (n,) = conn.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ?", [STAGING_SCHEMA]
                ).fetchone()
                staged_at_commit.append(n)

        step = Step([[_invoice(), _invoice()]], rejects=(Rej("1", {}, "bad"),))
        stats = _write(conn, step, 0, before_merge_statement=count_staging_at_commit)
        assert stats.committed and staged_at_commit == [0]
        assert staging_tables(conn) == {}
