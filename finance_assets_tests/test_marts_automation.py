"""The marts' automation as Dagster's own evaluator runs it: the shipped definitions, the
target of the shipped ``finance_marts_automation`` sensor, and a real (SQLite) Dagster
instance into which the finance assets were really materialized from sandbox servers.

Each ``tick`` is one evaluation, carrying the cursor from the one before, as the sensor
does. Issue 14 asks: the marts materialize by themselves after their upstream assets do,
never while a blocking check upstream fails. With organizations declared the finance
assets are partitioned by organization and the marts are not: one organization's
partition landing with its blocking checks passed is enough, as long as no organization's
latest blocking check has failed (the marts read every organization's rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from finance_assets.assets import DEFAULT_NAMES
from finance_assets.marts import MARTS, mart_names
from finance_assets.marts.assets import AUTOMATION
from finance_assets.sandbox import Sandbox
from finance_assets_tests.harness import (
    ORGANIZATIONS,
    declare_organizations,
    fast_resource,
    shipped_definitions,
    sync_organization,
)

SCALE = 0.02
# The harness's three organizations, without their rate limits (not what is tested here).
QUICK_ORGANIZATIONS = {key: (seed, 0.01, None) for key, (seed, _, _) in ORGANIZATIONS.items()}
NAMES = mart_names(DEFAULT_NAMES)
MART_KEYS = {NAMES.asset_key(m) for m in MARTS}
BLOCKING_CHECKS = "not any_deps_landed_without_passing_blocking_checks"


@dataclass
class Ticks:
    """The marts' automation sensor's evaluations, one ``tick`` at a time."""

    instance: dg.DagsterInstance
    cursor: dg.AssetDaemonCursor | None = None
    last: dg.EvaluateAutomationConditionsResult | None = field(default=None, repr=False)

    def tick(self) -> set[dg.AssetKey]:
        """One evaluation of the sensor's target; the marts it requests."""
        defs = shipped_definitions()
        sensor = defs.resolve_sensor_def(NAMES.automation_sensor)
        assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
        self.last = dg.evaluate_automation_conditions(
            defs=defs, instance=self.instance, asset_selection=sensor.asset_selection,
            cursor=self.cursor,
        )  # fmt: skip
        self.cursor = self.last.cursor
        return {key for key in MART_KEYS if self.last.get_num_requested(key)}

    def held_by(self) -> str:
        """What held the marts back on the last tick: the first part of their condition
        (an AND, and eager's AND inside it) that was false. An AND hands its later parts
        only what the earlier ones left, so those are false too and say nothing."""
        assert self.last is not None
        result = next(r for r in self.last.results if r.key in MART_KEYS)
        while type(result.condition).__name__ == "AndAutomationCondition":
            result = next(c for c in result.child_results if c.true_subset.is_empty)
        return named(result)


def named(result: dg.AutomationResult) -> str:
    condition = result.condition
    if type(condition).__name__ == "NotAutomationCondition":
        return f"not {named(result.child_results[0])}"
    return condition.get_label() or condition.name


def run_job(job: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """One run of a shipped job (unpartitioned) into ``instance``; never raises."""
    defs = shipped_definitions()
    resources = {"finance_api": fast_resource(defs)} if job != NAMES.job else {}
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, resources=resources
    )


def blocking_checks_failed(result: dg.ExecuteInProcessResult) -> set[str]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}"
            for e in result.get_asset_check_evaluations() if not e.passed}  # fmt: skip


@pytest.fixture
def instance() -> dg.DagsterInstance:
    """Dagster's own instance, its storages in memory (the SQL event log and run storage
    the daemon reads, without a file: the runs take a fraction of the time)."""
    return dg.DagsterInstance.ephemeral()


def one_connection(sb: Sandbox, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of one connection to ``sb``, as to a real API."""
    monkeypatch.delenv("FINANCE_ORGANIZATIONS_FILE", raising=False)
    for name, value in (
        ("FINANCE_SOURCE", "api"), ("FINANCE_API_BASE_URL", sb.base_url),
        ("FINANCE_API_TOKEN_URL", sb.token_url), ("FINANCE_API_CLIENT_ID", sb.client_id),
        ("FINANCE_API_CLIENT_SECRET", sb.client_secret),
        ("FINANCE_API_REFRESH_TOKEN", sb.refresh_token),
        ("FINANCE_DUCKDB_PATH", str(folder / "warehouse.duckdb")),
    ):  # fmt: skip
        monkeypatch.setenv(name, value)


def test_the_shipped_marts_carry_the_condition() -> None:
    specs = {s.key: s for s in shipped_definitions().resolve_all_asset_specs()}
    assert {specs[k].automation_condition for k in MART_KEYS} == {AUTOMATION}


def test_the_marts_are_requested_after_each_sync_and_not_for_their_own_run(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance
) -> None:
    one_connection(make_sandbox(scale=SCALE), tmp_path, monkeypatch)
    ticks = Ticks(instance)
    assert ticks.tick() == set()  # nothing landed yet

    assert run_job(DEFAULT_NAMES.incremental_job, instance).success
    assert ticks.tick() == MART_KEYS
    assert ticks.tick() == set()  # requested once per sync, not on every tick

    assert run_job(NAMES.job, instance).success  # what the sensor's run does
    assert ticks.tick() == set()

    assert run_job(DEFAULT_NAMES.incremental_job, instance).success
    assert ticks.tick() == MART_KEYS


def test_a_failed_blocking_check_upstream_holds_the_marts(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance
) -> None:
    sb = make_sandbox(scale=SCALE, null_violations=1)
    one_connection(sb, tmp_path, monkeypatch)
    ticks = Ticks(instance)
    ticks.tick()

    synced = run_job(DEFAULT_NAMES.incremental_job, instance)
    assert not synced.success and blocking_checks_failed(synced)
    assert synced.get_asset_materialization_events()  # the data landed, as it came
    assert ticks.tick() == set()
    assert ticks.held_by() == BLOCKING_CHECKS

    # And on the next sync, which fails its blocking checks again.
    assert not run_job(DEFAULT_NAMES.incremental_job, instance).success
    assert ticks.tick() == set()
    assert ticks.held_by() == BLOCKING_CHECKS


def test_with_organizations_one_partition_landing_clean_is_enough(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance
) -> None:
    def books(**config) -> Sandbox:  # globex's API sends nulls its contract forbids
        return make_sandbox(**config, null_violations=int(config["client_id"] == "globex-client"))

    declare_organizations(books, tmp_path, monkeypatch, QUICK_ORGANIZATIONS)
    ticks = Ticks(instance)
    assert ticks.tick() == set()

    assert sync_organization("acme", instance).success
    assert ticks.tick() == MART_KEYS, ticks.held_by()  # the others have not synced yet
    assert ticks.tick() == set()

    globex = sync_organization("globex", instance)
    assert not globex.success and blocking_checks_failed(globex)
    assert ticks.tick() == set()
    assert ticks.held_by() == BLOCKING_CHECKS

    # Held while globex's latest blocking checks fail, though initech lands clean: the
    # marts read every organization's rows.
    assert sync_organization("initech", instance).success
    assert ticks.tick() == set()
