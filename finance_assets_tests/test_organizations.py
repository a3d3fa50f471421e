"""Several organizations in one deployment: each its own sandbox server, credentials,
rate limit, partition, cursors and deletions, in one warehouse file.

Three sandboxes with different seeds, sizes and limits stand for three organizations;
the organizations file names each one's secrets by variable, as a deployment would.
Runs go through the shipped definitions (the component reading that file).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from finance_assets.endpoints import BY_NAME, ENDPOINTS
from finance_assets.records.page_columns import columns_from_records
from finance_assets.schema import DEFAULT_ORGANIZATION
from finance_assets.warehouse import Warehouse, Writer
from finance_assets_tests.harness import (
    DG,
    PROJECT_ROOT,
    assert_warehouse_equals_sandbox,
    declare_organizations,
    failure_headline,
    materialize,
    shipped_definitions,
    sync_organization,
)
from finance_assets_tests.warehouse_helpers import make

INVOICES = BY_NAME["invoices"]


@pytest.fixture
def deployment(tmp_path: Path, make_sandbox, monkeypatch: pytest.MonkeyPatch):
    """Three organizations declared in a file, their secrets in the environment."""
    return declare_organizations(make_sandbox, tmp_path, monkeypatch)


def cursors(database: Path) -> dict[str, dict[str, dt.datetime]]:
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute("select organization, resource, cursor from finance._sync_state")
        out: dict[str, dict[str, dt.datetime]] = {}
        for organization, resource, cursor in rows.fetchall():
            out.setdefault(organization, {})[resource] = cursor
    return out


def rows_of(database: Path, organization: str) -> dict[str, list[tuple]]:
    """Every data table's rows of one organization, without load times."""
    out = {}
    with duckdb.connect(str(database), read_only=True) as conn:
        for endpoint in ENDPOINTS:
            for table in [endpoint.name, *(f"{endpoint.name}__{c}" for c in endpoint.children)]:
                columns = [
                    d[0]
                    for d in conn.execute(f"select * from finance.{table} limit 0").description
                    if d[0] != "_loaded_at"
                ]
                select = ", ".join(f'"{c}"' for c in columns)
                out[table] = conn.execute(
                    f"select {select} from finance.{table} where _organization = ? order by all",
                    [organization],
                ).fetchall()
    return out


def test_organizations_are_the_partitions_and_the_schedules_cover_each(deployment) -> None:
    defs = shipped_definitions()
    job = defs.resolve_job_def("finance_daily")
    assert job.partitions_def is not None
    assert job.partitions_def.get_partition_keys() == ["acme", "globex", "initech"]
    assets = defs.resolve_assets_def("invoices")
    assert assets.backfill_policy == dg.BackfillPolicy.multi_run(1)  # one run per organization
    for name in ("finance_daily_schedule", "finance_weekly_full_refresh_schedule"):
        schedule = defs.resolve_schedule_def(name)
        tick = dt.datetime(2026, 12, 1, 3, tzinfo=dt.timezone.utc)
        with dg.build_schedule_context(scheduled_execution_time=tick) as context:
            requests = list(schedule(context))
        assert [r.partition_key for r in requests] == ["acme", "globex", "initech"]
        assert len({r.run_key for r in requests}) == 3


def test_each_organization_lands_its_own_books_and_cursors(deployment) -> None:
    books, database = deployment
    with dg.DagsterInstance.ephemeral() as instance:  # in memory: quick
        for key in books:
            result = sync_organization(key, instance)
            assert result.success, key
        for key, b in books.items():
            assert_warehouse_equals_sandbox(b.sandbox, database, key)
        first = cursors(database)
        assert set(first) == set(books)
        assert all(len(first[k]) == len(ENDPOINTS) for k in books)
        with duckdb.connect(str(database), read_only=True) as conn:
            recorded = conn.execute("select organization, source from finance._source")
            sources = dict(recorded.fetchall())
        assert sources == {k: b.sandbox.base_url for k, b in books.items()}

        # An update in one organization reaches only that organization, and only its
        # cursors advance.
        others = {k: rows_of(database, k) for k in ("globex", "initech")}
        changed = books["acme"].sandbox.mutate("invoices", updates=3, inserts=2)
        assert sync_organization("acme", instance).success
        assert_warehouse_equals_sandbox(books["acme"].sandbox, database, "acme")
        assert {k: rows_of(database, k) for k in others} == others
        second = cursors(database)
        assert all(second["acme"][r] > first["acme"][r] for r in first["acme"])
        assert {k: second[k] for k in others} == {k: first[k] for k in others}
        with duckdb.connect(str(database), read_only=True) as conn:
            owners = conn.execute(
                "select distinct _organization from finance.invoices where id in "
                "(select unnest(?::varchar[]))",
                [changed["updated"] + changed["inserted"]],
            ).fetchall()
        assert owners == [("acme",)] or set(owners) >= {("acme",)}

        # A full refresh in one organization marks only that organization's deletions.
        gone = books["globex"].sandbox.mutate("invoices", deletes=2)["deleted"]
        assert sync_organization("globex", instance, job="full_refresh").success
        with duckdb.connect(str(database), read_only=True) as conn:
            marked = conn.execute(
                "select _organization, id from finance.invoices where _deleted_at is not null "
                "order by all"
            ).fetchall()
        assert marked == sorted(("globex", i) for i in gone)
        for key, b in books.items():
            assert_warehouse_equals_sandbox(b.sandbox, database, key)


def test_a_revoked_refresh_token_fails_its_organization_alone(deployment) -> None:
    books, database = deployment
    books["initech"].sandbox.configure(refresh_token="issued-again")  # the old one is revoked
    with dg.DagsterInstance.ephemeral() as instance:  # in memory: quick
        failed = sync_organization("initech", instance)
        landed = {k: sync_organization(k, instance) for k in ("acme", "globex")}
        assert not failed.success
        headline = failure_headline(failed)
        assert headline.startswith("organization initech: the token endpoint refused the refresh")
        assert "INITECH_REFRESH_TOKEN" in headline and "initech-rt" not in headline
        for key, result in landed.items():
            assert result.success
            assert_warehouse_equals_sandbox(books[key].sandbox, database, key)
            evaluations = result.get_asset_check_evaluations()
            assert len(evaluations) == 5 * len(ENDPOINTS)  # with column_schema_change
            assert all(e.passed for e in evaluations if e.check_name != "undocumented_fields")
        with duckdb.connect(str(database), read_only=True) as conn:
            held = conn.execute("select distinct _organization from finance.invoices").fetchall()
        assert sorted(held) == [("acme",), ("globex",)]


def test_a_missing_secret_variable_fails_that_organization_in_one_sentence(
    deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GLOBEX_CLIENT_SECRET")
    with dg.DagsterInstance.ephemeral() as instance:  # in memory: quick
        result = sync_organization("globex", instance)
    assert not result.success
    assert failure_headline(result) == (
        "organization globex: GLOBEX_CLIENT_SECRET (its client secret) is not set; set it in "
        "the environment of the runs, or remove the organization."
    )


def test_records_merge_on_organization_and_id(tmp_path: Path) -> None:
    """The same ids in two organizations are two records; a full refresh of one proves
    deletions among its own rows only."""
    loaded = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    same = [make(INVOICES.model, id=f"9{i}") for i in range(3)]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        for organization in ("north", "south"):
            with Warehouse(conn, organization).writer(INVOICES, loaded) as w:
                write_page(w, same)
        with Warehouse(conn, "north").writer(INVOICES, loaded, full_refresh=True) as w:
            write_page(w, same[:1])
            w.seen_range("", "\U0010ffff")
        rows = conn.execute(
            "select _organization, id, _deleted_at is not null from finance.invoices order by all"
        ).fetchall()
    assert rows == [
        ("north", "90", False), ("north", "91", True), ("north", "92", True),
        ("south", "90", False), ("south", "91", False), ("south", "92", False),
    ]  # fmt: skip


def write_page(writer: Writer, records: list) -> None:
    writer.add(columns_from_records(INVOICES, records))


def test_a_single_connection_warehouse_upgrades_in_place(tmp_path: Path, make_sandbox) -> None:
    """A file written before organizations (no organization columns) gains them, as
    `default`, keeps its rows and cursors, and the next run is incremental."""
    sb = make_sandbox()
    database = tmp_path / "warehouse.duckdb"
    assert materialize(sb, database).success
    with duckdb.connect(str(database)) as conn:  # as the layout before organizations wrote it
        for (table,) in conn.execute(
            "select table_name from duckdb_columns() where schema_name = 'finance' "
            "and column_name in ('_organization', 'organization')"
        ).fetchall():
            column = "organization" if table.startswith("_") else "_organization"
            conn.execute(f'alter table finance."{table}" drop column {column}')
        before = conn.execute("select count(*) from finance.invoices").fetchone()
    sb.mutate("invoices", updates=2)
    result = materialize(sb, database)
    assert result.success
    modes = {
        m.asset_key.path[-1]: m.metadata["mode"].value
        for m in result.asset_materializations_for_node("sync_finance_records")
    }
    assert set(modes.values()) == {"incremental"}
    assert_warehouse_equals_sandbox(sb, database)
    with duckdb.connect(str(database), read_only=True) as conn:
        assert conn.execute("select count(*) from finance.invoices").fetchone() == before
        owners = conn.execute(
            "select distinct _organization from finance.invoices__line_items union "
            "select distinct organization from finance._sync_state union "
            "select distinct organization from finance._source"
        ).fetchall()
    assert owners == [(DEFAULT_ORGANIZATION,)]


def test_organizations_launched_together_all_land(deployment, tmp_path: Path) -> None:
    """Three runs started at once, each its own process, write one warehouse file: each
    stages on its own and merges in short windows, so all three land, each exact."""
    books, database = deployment
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The instance exists before its runs, as in a deployment: processes that create a
    # fresh SQLite instance's storage at the same moment race on its schema (Dagster's own).
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dg.DagsterInstance.from_config(str(home)).dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(home)
    runs = {
        key: subprocess.Popen(
            [str(DG), "launch", "--job", "finance_daily", "--partition", key],
            env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"{key}.err", "wb"),  # noqa: SIM115 - closed with the run
        )  # fmt: skip
        for key in books
    }
    for key, process in runs.items():
        assert process.wait(timeout=300) == 0, (tmp_path / f"{key}.err").read_text()[-2000:]
    for key, b in books.items():
        assert_warehouse_equals_sandbox(b.sandbox, database, key)
