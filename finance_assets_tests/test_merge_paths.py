"""The merge's shortcuts give exactly the results of its general statements.

``Writer._merge`` probes first and skips the statements that cannot change a row: a
first load has nothing to delete, update or restore, and without a repeated id every
staged row is its id's winner (no temporary winners table, no ``_seq`` semi-joins).
Each scenario runs twice, once with the probe forced to "run everything", and every
table and stat must match; then the merge transaction is failed at each of its
statements, on both paths, and every table of the ``finance`` schema must be unchanged.
"""

from __future__ import annotations

import dataclasses
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


def _write(conn: Any, step: Step, k: int) -> WriteStats:
    full = step.full_refresh
    with Warehouse(conn).writer(INVOICES, _at(k), flush_rows=2, full_refresh=full) as w:
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
            "INSERT INTO finance.invoices__line_items (parent_id, position) "
            "VALUES (?, 0), (?, 0), ('999', 0)",
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


def _run_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the general path: the probe claims every statement may change a row."""
    probe = Writer._probe

    def pessimist(self: Writer, target: str) -> Any:
        found = probe(self, target)
        return dataclasses.replace(
            found,
            duplicates=True,
            target_rows=True,
            child_rows=dict.fromkeys(found.child_rows, True),
            quarantined=True,
            rejections=True,
        )

    monkeypatch.setattr(Writer, "_probe", pessimist)


def _play(database: Path, scenario: Scenario) -> tuple[list[WriteStats], list[dict]]:
    with duckdb.connect(str(database)) as conn:
        scenario.setup(conn)
        stats, tables = [], []
        for k, step in enumerate(scenario.steps):
            stats.append(_write(conn, step, k))
            tables.append(finance_tables(conn))
    return stats, tables


@pytest.mark.parametrize("build", SCENARIOS, ids=lambda b: b.__name__)
def test_shortcuts_give_exactly_the_general_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Callable[[], Scenario]
) -> None:
    scenario = build()  # the same records (and ids) for both runs
    probes: list[Any] = []
    probe = Writer._probe

    def spy(self: Writer, target: str) -> Any:
        probes.append(probe(self, target))
        return probes[-1]

    monkeypatch.setattr(Writer, "_probe", spy)
    fast = _play(tmp_path / "fast.duckdb", scenario)
    assert not probes[0].target_rows  # the first write took the first-load shortcut
    _run_everything(monkeypatch)
    general = _play(tmp_path / "general.duckdb", scenario)
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
    live = [sum(r[-1] is None for r in t["invoices"]) for t in tables]  # _deleted_at last
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
class FailingConnection:
    """Forwards to a connection, raising at the n-th statement of the merge transaction.

    The writer's first BEGIN only checks the tables (rolled back); the second one is
    the merge's, and its statements (COMMIT included) are counted from there.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, fail_at: int) -> None:
        self._conn, self._fail_at = conn, fail_at
        self._begins, self._armed, self.statements = 0, False, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _tick(self) -> None:
        if self._armed:
            self.statements += 1
            if self.statements == self._fail_at:
                raise OSError("disk full")

    def begin(self) -> Any:
        self._begins += 1
        self._armed = self._begins == 2
        return self._conn.begin()

    def execute(self, *args: Any) -> Any:
        self._tick()
        return self._conn.execute(*args)

    def executemany(self, *args: Any) -> Any:
        self._tick()
        return self._conn.executemany(*args)

    def commit(self) -> Any:
        self._tick()
        self._armed = False
        return self._conn.commit()

    def rollback(self) -> Any:
        self._armed = False
        return self._conn.rollback()


@pytest.mark.parametrize("general", [False, True], ids=["shortcuts", "general"])
@pytest.mark.parametrize("build", SCENARIOS, ids=lambda b: b.__name__)
def test_a_failure_at_any_merge_statement_leaves_every_table_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Callable[[], Scenario], general: bool
) -> None:
    scenario = build()
    if general:
        _run_everything(monkeypatch)
    *earlier, last = scenario.steps
    expected = _play(tmp_path / "expected.duckdb", scenario)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        scenario.setup(conn)
        for k, step in enumerate(earlier):
            _write(conn, step, k)
        before = finance_tables(conn)
        fail_at = 0
        while True:
            fail_at += 1
            failing = FailingConnection(conn, fail_at)
            try:
                stats = _write(failing, last, len(earlier))
            except OSError:
                assert finance_tables(conn) == before, f"statement {fail_at}"
                assert staging_tables(conn) == {} and temp_tables(conn) == 0
                continue
            assert failing.statements < fail_at  # every statement was failed once
            break
        assert fail_at > 6
        assert (stats, finance_tables(conn)) == (expected[0][-1], expected[1][-1])


class CommitSpy(FailingConnection):
    """Records the staging tables the merge transaction still sees when it commits."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        super().__init__(conn, fail_at=0)
        self.staged_at_commit: list[int] = []

    def commit(self) -> Any:
        if self._armed:
            (n,) = self._conn.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ?", [STAGING_SCHEMA]
            ).fetchone()
            self.staged_at_commit.append(n)
        return super().commit()


def test_staging_is_dropped_inside_the_merge_transaction(tmp_path: Path) -> None:
    """So a checkpoint the commit triggers never writes staged rows to the file."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        spy = CommitSpy(conn)
        stats = _write(spy, Step([[_invoice(), _invoice()]], rejects=(Rej("1", {}, "bad"),)), 0)
        assert stats.committed and spy.staged_at_commit == [0]
        assert staging_tables(conn) == {}
