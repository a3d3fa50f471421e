"""Configuration that can never mix sources: which source a deployment reads, and a
warehouse file that refuses any other source's data, byte for byte unchanged."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from finance_assets.assets import SOURCE_TAG
from finance_assets.components import FinanceApiIngestion
from finance_assets.components.connection import (
    ApiConnection,
    ConfigurationError,
    Setting,
    choose_source,
)
from finance_assets.resources import FinanceApiResource, api_source
from finance_assets.warehouse import SOURCE_TABLE, recorded_source
from finance_assets_tests.harness import (
    SCALE,
    api_for,
    cli_env,
    failure_headline,
    failure_message,
    run,
    shipped_definitions,
)

FIVE = (
    "FINANCE_API_BASE_URL",
    "FINANCE_API_TOKEN_URL",
    "FINANCE_API_CLIENT_ID",
    "FINANCE_API_CLIENT_SECRET",
    "FINANCE_API_REFRESH_TOKEN",
)
ALL_SET = {name: f"https://example.com/{name.lower()}" for name in FIVE}
SELECTION = ["users", "invoices"]


def sandbox(**settings: object) -> FinanceApiResource:
    return FinanceApiResource(use_sandbox=True, sandbox_scale=SCALE, **settings)


# ---------- which source ----------
def test_nothing_set_reads_the_sandbox_and_everything_set_the_api() -> None:
    assert choose_source(None, ApiConnection(), {}) == "sandbox"
    assert choose_source(None, ApiConnection(), ALL_SET) == "api"
    assert choose_source(Setting(value=""), ApiConnection(), ALL_SET) == "api"


@pytest.mark.parametrize("unset", [FIVE[:1], FIVE[1:3], FIVE[1:]], ids=["one", "two", "four"])
def test_a_partial_configuration_names_every_missing_variable(unset: tuple[str, ...]) -> None:
    environ = {k: v for k, v in ALL_SET.items() if k not in unset}
    with pytest.raises(ConfigurationError) as refused:
        choose_source(None, ApiConnection(), environ)
    message = str(refused.value)
    missing, present = message.split(" but ")
    assert all(name in missing for name in unset)
    assert all(name in present for name in environ)
    assert "set all five for the real API, or none for the sandbox" in message


def test_the_rate_limit_alone_is_a_partial_configuration() -> None:
    with pytest.raises(ConfigurationError, match="FINANCE_API_RATE_LIMIT_PER_MINUTE is:"):
        choose_source(None, ApiConnection(), {"FINANCE_API_RATE_LIMIT_PER_MINUTE": "120"})


def test_an_explicit_choice_wins_and_an_unknown_one_is_refused() -> None:
    chosen = Setting(env_var="FINANCE_SOURCE")
    sandbox_chosen = {**ALL_SET, "FINANCE_SOURCE": "sandbox"}
    assert choose_source(chosen, ApiConnection(), sandbox_chosen) == "sandbox"
    with pytest.raises(ConfigurationError, match="FINANCE_SOURCE is 'api' but .* not set"):
        choose_source(chosen, ApiConnection(), {"FINANCE_SOURCE": "api"})
    with pytest.raises(ConfigurationError, match="FINANCE_SOURCE is 'sandbx'"):
        choose_source(chosen, ApiConnection(), {"FINANCE_SOURCE": "sandbx"})


def test_the_sandbox_never_defaults_to_the_api_warehouse_file() -> None:
    default = FinanceApiIngestion()
    assert default.database("api") == "data/warehouse.duckdb"
    assert default.database("sandbox") == "data/sandbox.duckdb"
    assert default.database(None) == "data/sandbox.duckdb"  # unusable: never the real file
    other = FinanceApiIngestion(name="eu_books")
    assert other.database("api") == "data/eu_books.duckdb"
    assert other.database("sandbox") == "data/eu_books_sandbox.duckdb"


def test_a_credential_written_as_a_value_is_refused() -> None:
    with pytest.raises(Exception, match="client_secret"):
        FinanceApiIngestion.resolve_from_yaml("connection:\n  client_secret: hunter2\n")
    named = FinanceApiIngestion.resolve_from_yaml(
        'connection:\n  client_secret: "{{ env.MY_SECRET }}"\n'
    )
    assert named.connection.client_secret is not None
    assert named.connection.client_secret.env_var == "MY_SECRET"


def test_a_partial_configuration_loads_and_fails_every_run_before_any_write(
    monkeypatch, tmp_path
) -> None:
    for name, value in ALL_SET.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FINANCE_API_BASE_URL")
    monkeypatch.setenv("FINANCE_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    defs = shipped_definitions()  # the UI still loads, and shows why runs fail
    assert "FINANCE_API_BASE_URL" in str(defs.resources["finance_api"].configuration_error)
    result = defs.resolve_job_def("finance_daily").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    message = failure_headline(result)
    assert message.startswith("FINANCE_API_BASE_URL is not set, but FINANCE_API_TOKEN_URL")
    assert not (tmp_path / "w.duckdb").exists()


def test_by_hand_a_missing_base_url_exits_non_zero_and_leaves_the_file(
    make_sandbox, tmp_path
) -> None:
    """The issue's case through the CLI: four variables set, the base URL missing, and a
    warehouse that already holds that API's data."""
    sb = make_sandbox(scale=SCALE)
    database = tmp_path / "w.duckdb"
    assert run(api_for(sb), database, SELECTION).success
    before = database.read_bytes()
    env = cli_env(sb, database, tmp_path / "home")
    del env["FINANCE_API_BASE_URL"]
    command = [sys.executable, "-m", "dagster", "asset", "materialize",
               "-m", "finance_assets.definitions", "--select", "invoices"]  # fmt: skip
    work = tmp_path / "run"
    work.mkdir()
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "FINANCE_API_BASE_URL is not set" in done.stdout + done.stderr
    assert database.read_bytes() == before
    assert sb.stats()["requests"].keys() == {"/oauth/v2/token", "/v1/users", "/v1/invoices"}
    assert sum(sb.stats()["requests"]["/v1/invoices"].values()) == 1  # only the first run's


# ---------- the warehouse keeps its source ----------
def test_a_sandbox_run_into_an_api_warehouse_is_refused_and_changes_no_byte(
    make_sandbox, tmp_path
) -> None:
    sb = make_sandbox(scale=SCALE)
    database = tmp_path / "w.duckdb"
    assert run(api_for(sb), database, SELECTION).success
    before = database.read_bytes()
    refused = run(sandbox(), database, SELECTION)
    assert not refused.success
    message = failure_headline(refused)
    assert message.startswith(f"{database} holds data from {sb.base_url}, but this run reads ")
    assert "sandbox (seed 42, scale 0.02)" in message and "nothing was written" in message
    assert database.read_bytes() == before
    assert not Path(f"{database}.wal").exists()


def test_an_api_run_into_a_sandbox_warehouse_is_refused_before_any_request(
    make_sandbox, tmp_path
) -> None:
    database = tmp_path / "w.duckdb"
    assert run(sandbox(), database, SELECTION).success
    before = database.read_bytes()
    sb = make_sandbox(scale=SCALE)
    refused = run(api_for(sb), database, SELECTION)
    assert not refused.success
    assert "holds data from sandbox (seed 42, scale 0.02)" in failure_headline(refused)
    assert database.read_bytes() == before
    assert sb.stats()["requests"] == {}  # not even a token was asked for


def test_a_matching_source_writes_as_before(tmp_path) -> None:
    database = tmp_path / "w.duckdb"
    first = run(sandbox(), database, SELECTION)
    second = run(sandbox(), database, SELECTION)
    assert first.success and second.success
    with duckdb.connect(str(database), read_only=True) as conn:
        assert recorded_source(conn) == "sandbox (seed 42, scale 0.02)"
        modes = conn.execute("select mode from finance._sync_state order by all").fetchall()
    assert modes == [("incremental",), ("incremental",)]
    another_seed = run(sandbox(sandbox_seed=7), database, SELECTION)
    assert "holds data from sandbox (seed 42" in failure_headline(another_seed)


def test_a_warehouse_from_before_sources_were_recorded_is_claimed_once(tmp_path) -> None:
    database = tmp_path / "w.duckdb"
    assert run(sandbox(), database, SELECTION).success
    with duckdb.connect(str(database)) as conn:
        conn.execute(f"drop table {SOURCE_TABLE}")
    refused = run(sandbox(), database, SELECTION)
    message = failure_headline(refused)
    assert "no record of their source" in message
    claim = shlex.split(message.split("`")[1])  # the command the sentence tells us to run
    assert claim[:3] == ["python", "-m", "finance_assets.warehouse.source"]
    subprocess.run([sys.executable, *claim[1:]], check=True, capture_output=True)
    assert run(sandbox(), database, SELECTION).success


def test_every_run_names_its_source_first_in_a_tag_and_in_metadata(tmp_path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = run(sandbox(), tmp_path / "w.duckdb", SELECTION, instance)
    assert result.success
    source = "sandbox (seed 42, scale 0.02)"
    logs = [e.user_message for e in instance.all_logs(result.run_id) if not e.is_dagster_event]
    assert logs[0].startswith(f"Reading {source} into ")
    assert instance.get_run_by_id(result.run_id).tags[SOURCE_TAG] == source
    for event in result.get_asset_materialization_events():
        assert event.materialization.metadata["source"] == dg.MetadataValue.text(source)


def test_an_explicit_sandbox_ignores_a_configured_api_and_its_file(monkeypatch) -> None:
    """What ``make demo`` does: the sandbox chosen, whatever the shell or a .env says."""
    for name, value in ALL_SET.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FINANCE_SOURCE", "sandbox")
    defs = shipped_definitions()
    assert defs.resources["finance_api"].use_sandbox
    assert defs.resources["duckdb"].database == "data/sandbox.duckdb"
    monkeypatch.delenv("FINANCE_SOURCE")
    defs = dg.component_defs(component=FinanceApiIngestion(source=Setting("FINANCE_SOURCE")))
    assert not defs.resources["finance_api"].use_sandbox
    assert defs.resources["duckdb"].database == "data/warehouse.duckdb"


def test_the_rate_limit_variable_keeps_its_meaning(monkeypatch) -> None:
    for name, value in ALL_SET.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FINANCE_API_RATE_LIMIT_PER_MINUTE", "120")
    assert shipped_definitions().resources["finance_api"].rate_limit_per_minute == 120
    monkeypatch.setenv("FINANCE_API_RATE_LIMIT_PER_MINUTE", "lots")
    refused = shipped_definitions().resources["finance_api"].configuration_error
    assert refused is not None and "FINANCE_API_RATE_LIMIT_PER_MINUTE is 'lots'" in refused


def test_a_first_run_that_lands_nothing_does_not_bind_the_file(make_sandbox, tmp_path) -> None:
    """A mistyped base URL fails every endpoint of the first run; the corrected URL then
    loads into the same file (a source binds once data has landed)."""
    sb = make_sandbox(scale=SCALE)
    database = tmp_path / "w.duckdb"
    typo = run(api_for(sb, base_url=sb.base_url + "/v1"), database, SELECTION)
    assert not typo.success and "not found (404)" in failure_message(typo)
    assert run(api_for(sb), database, SELECTION).success
    with duckdb.connect(str(database), read_only=True) as conn:
        assert recorded_source(conn) == sb.base_url
    refused = run(api_for(sb, base_url=sb.base_url + "/v1"), database, SELECTION)
    assert f"holds data from {sb.base_url}, but this run reads" in failure_headline(refused)


def test_the_source_name_carries_no_credentials() -> None:
    assert api_source("https://user:pw@API.Example.com:8443/books/?token=s3cret#x") == (
        "https://api.example.com:8443/books"
    )
    assert api_source("https://api.example.com/") == "https://api.example.com"
