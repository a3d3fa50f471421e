"""Incremental sync and full refresh against the sandbox: nothing lost, deletes proven.

Cursor tests run with a zero margin: a margin re-reads recent changes anyway and
would hide a cursor that steps past an update.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import duckdb
import pytest

from finance_assets.endpoints import ENDPOINTS
from finance_assets.resources import FinanceApiResource
from finance_assets.sandbox import Sandbox
from finance_assets_tests.harness import assert_warehouse_equals_sandbox, materialize

PER_PAGE = 5
PREFETCH = FinanceApiResource.model_fields["prefetch_pages"].default


def meta(result, name: str) -> dict:
    """The materialization metadata of one asset, as plain values."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == name:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{name} was not materialized")


def query(database: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def cursor_of(database: Path, name: str) -> dt.datetime:
    rows = query(database, "select cursor from finance._sync_state where resource = ?", [name])
    return rows[0][0]


def api_requests(sb: Sandbox, path: str) -> int:
    return sum(sb.stats()["requests"].get(path, {}).values())


def test_unchanged_incremental_run_is_one_request_per_resource(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    first = materialize(sb, database)
    assert first.success and meta(first, "invoices")["mode"] == "full"
    sb.reset_stats()

    second = materialize(sb, database)
    assert second.success
    assert sb.stats()["api_requests"] == len(ENDPOINTS)
    assert sb.stats()["tokens_issued"] == 1
    for endpoint in ENDPOINTS:
        m = meta(second, endpoint.name)
        assert m["mode"] == "incremental" and m["requests"] == 1, endpoint.name
        assert m["records_fetched"] == 0 and m["records_marked_deleted"] == 0
        assert m["cursor_used"] == meta(first, endpoint.name)["cursor_new"]
    assert_warehouse_equals_sandbox(sb, database)


def test_incremental_fetches_in_proportion_to_changes(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    assert materialize(sb, database, per_page=PER_PAGE).success
    changes = {"invoices": (7, 4), "contacts": (3, 0), "journals": (0, 2)}
    for name, (updates, inserts) in changes.items():
        sb.mutate(name, updates=updates, inserts=inserts, change_children=True)
    sb.reset_stats()

    result = materialize(sb, database, per_page=PER_PAGE, margin=0)
    assert result.success
    expected = 0
    for endpoint in ENDPOINTS:
        updates, inserts = changes.get(endpoint.name, (0, 0))
        pages = max(1, math.ceil((updates + inserts) / PER_PAGE))  # has_more_page is exact
        m = meta(result, endpoint.name)
        # Past page 1 the client may guess up to prefetch_pages - 1 pages past the end
        # (the sandbox's ample limit makes guesses cheap); a 1-page resource costs 1.
        guesses = PREFETCH - 1 if pages > 1 else 0
        assert pages <= m["requests"] <= pages + guesses, endpoint.name
        assert (m["records_changed"], m["records_inserted"]) == (updates, inserts), endpoint.name
        expected += m["requests"]
    assert sb.stats()["api_requests"] == expected
    assert_warehouse_equals_sandbox(sb, database)


def test_update_during_pagination_is_not_lost(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    first_page_id = sb.records("invoices")[0]["id"]
    # After page 1 of the first pass is served, a record on it changes: the pass keeps
    # its old values, and an insert lands at the end of the list.
    plan = sb.mutate("invoices", update_ids=[first_page_id], inserts=1, after_requests=1)
    first = materialize(sb, database, selection=["invoices"], per_page=PER_PAGE, margin=0)
    assert first.success
    stale = query(
        database, "select total, notes from finance.invoices where id = ?", plan["updated"]
    )
    fresh = next(r for r in sb.records("invoices") if r["id"] == first_page_id)
    assert stale[0] != (fresh["total"], fresh["notes"])  # the pass read the old values

    second = materialize(sb, database, selection=["invoices"], per_page=PER_PAGE, margin=0)
    assert second.success and meta(second, "invoices")["mode"] == "incremental"
    row = query(database, "select total, notes from finance.invoices where id = ?", plan["updated"])
    assert row[0] == (fresh["total"], fresh["notes"])
    ids = {r[0] for r in query(database, "select id from finance.invoices")}
    assert ids == {r["id"] for r in sb.records("invoices")}


@pytest.mark.parametrize("offset", ["+05:30", "-08:00", "Z"])
def test_cursor_boundary_is_an_inclusive_instant_whatever_the_offset(
    make_sandbox, tmp_path, offset: str
) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    assert materialize(sb, database, selection=["contacts"], margin=0).success
    cursor = cursor_of(database, "contacts")
    zone = dt.timezone.utc if offset == "Z" else dt.datetime.strptime(offset, "%z").tzinfo

    def stamp(instant: dt.datetime) -> str:
        text = instant.astimezone(zone).isoformat()
        return text.replace("+00:00", "Z") if offset == "Z" else text

    table = sb.tables["contacts"]
    at, before = sb.records("contacts")[:2]
    for record, instant in ((at, cursor), (before, cursor - dt.timedelta(seconds=1))):
        live = table.find(record["id"])
        live["notes"] = f"changed at {stamp(instant)}"
        live["last_modified_time"] = stamp(instant)
        table.refresh(live)

    result = materialize(sb, database, selection=["contacts"], margin=0)
    assert result.success and meta(result, "contacts")["records_fetched"] == 1
    notes = dict(query(database, "select id, notes from finance.contacts"))
    assert notes[at["id"]] == f"changed at {stamp(cursor)}"  # exactly at the cursor: re-read
    assert notes[before["id"]] == before["notes"]  # one second before: outside the window


def deleted_ids(database: Path, name: str) -> set[str]:
    rows = query(database, f"select id from finance.{name} where _deleted_at is not null")
    return {r[0] for r in rows}


def test_deletes_marked_by_full_refresh_only_and_children_stay(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    assert materialize(sb, database).success
    gone = sb.mutate("invoices", deletes=3)["deleted"]
    children = query(
        database,
        "select count(*) from finance.invoices__line_items where parent_id in (?, ?, ?)",
        gone,
    )[0][0]

    incremental = materialize(sb, database)
    assert incremental.success and deleted_ids(database, "invoices") == set()

    full = materialize(sb, database, full_refresh=True)
    assert full.success
    assert meta(full, "invoices")["mode"] == "full"
    assert meta(full, "invoices")["records_marked_deleted"] == 3
    assert deleted_ids(database, "invoices") == set(gone)
    assert all(meta(full, e.name)["records_marked_deleted"] == 0 for e in ENDPOINTS[:7])
    still = query(
        database,
        "select count(*) from finance.invoices__line_items where parent_id in (?, ?, ?)",
        gone,
    )[0][0]
    assert still == children > 0  # soft delete: the rows and their children stay queryable
    assert_warehouse_equals_sandbox(sb, database)
    checks = {
        (c.asset_key.path[-1], c.check_name): c.passed for c in full.get_asset_check_evaluations()
    }
    assert all(checks.values())


def test_a_record_that_reappears_is_unmarked(make_sandbox, tmp_path) -> None:
    source = make_sandbox(scale=0.05, seed=11)
    database = tmp_path / "w.duckdb"
    assert materialize(source, database, selection=["contacts"]).success
    gone = source.mutate("contacts", deletes=2)["deleted"]
    assert materialize(source, database, selection=["contacts"], full_refresh=True).success
    assert deleted_ids(database, "contacts") == set(gone)

    # The same source again (seed and address): the deleted records exist once more.
    port = int(source.base_url.rsplit(":", 1)[1])
    source.stop()
    again = make_sandbox(scale=0.05, seed=11, port=port)
    result = materialize(again, database, selection=["contacts"], full_refresh=True)
    assert result.success
    assert meta(result, "contacts")["records_restored"] == 2
    assert deleted_ids(database, "contacts") == set()


def test_deletion_during_full_refresh_never_marks_a_survivor(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    assert materialize(sb, database, selection=["contacts"]).success
    records = sb.records("contacts")
    victim, shifted = records[0]["id"], records[PER_PAGE]["id"]  # page 1's first, page 2's first
    # Deleted after page 1 is served: page 2 starts one record later, so `shifted`
    # moves onto page 1, already read, and this pass never sees it.
    sb.mutate("contacts", delete_ids=[victim], after_requests=1)

    result = materialize(sb, database, selection=["contacts"], full_refresh=True, per_page=PER_PAGE)
    assert result.success
    assert meta(result, "contacts")["records_fetched"] == len(records) - 1  # shifted was skipped
    assert shifted not in deleted_ids(database, "contacts")
    assert meta(result, "contacts")["records_marked_deleted"] == 0

    again = materialize(sb, database, selection=["contacts"], full_refresh=True, per_page=PER_PAGE)
    assert again.success
    assert deleted_ids(database, "contacts") == {victim}
    assert_warehouse_equals_sandbox_for(sb, database, "contacts")


def assert_warehouse_equals_sandbox_for(sb: Sandbox, database: Path, name: str) -> None:
    live = query(database, f"select id from finance.{name} where _deleted_at is null")
    assert {r[0] for r in live} == {r["id"] for r in sb.records(name)}


def test_failed_run_leaves_data_and_cursor_then_next_run_completes(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=0.05)
    database = tmp_path / "w.duckdb"
    assert materialize(sb, database, margin=0).success
    cursor = cursor_of(database, "invoices")
    before = query(database, "select * exclude (_loaded_at) from finance.invoices order by id")
    sb.mutate("invoices", updates=8, inserts=3)

    # The page guard trips on page 3 of invoices, after two pages were staged.
    failed = materialize(sb, database, margin=0, per_page=PER_PAGE, max_pages=2)
    assert not failed.success
    message = failed.get_step_failure_events()[0].step_failure_data.error.message
    assert "invoices" in message and "still more pages after 2" in message
    after = query(database, "select * exclude (_loaded_at) from finance.invoices order by id")
    assert after == before and cursor_of(database, "invoices") == cursor

    assert materialize(sb, database, margin=0).success
    assert cursor_of(database, "invoices") > cursor
    assert_warehouse_equals_sandbox(sb, database)
