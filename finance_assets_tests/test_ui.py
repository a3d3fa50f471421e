"""The Dagster UI in a real browser, used as a person uses it, on the bundled sandbox.

``dg dev`` runs from the project root with ``FINANCE_SOURCE=sandbox`` and a temporary
warehouse file and ``DAGSTER_HOME``; Playwright drives Debian's Chromium through it by
clicks and visible text. Each step's screenshot is saved under
``finance_assets_tests/artifacts/ui/sandbox/``; ``UPDATE_SCREENSHOTS=1`` also copies the
README's three into ``docs/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from finance_assets.endpoints import ENDPOINTS
from finance_assets.marts import MARTS
from finance_assets.sandbox import Sandbox, SandboxConfig
from finance_assets_tests.harness import (
    DagsterDev,
    Screenshots,
    catalog,
    materialize_all,
    metadata_row,
    nav,
    needs_chromium,
    only_run_after_automation,
    open_checks,
    opened_ui,
    select_check,
    shipped_definitions,
)

pytestmark = needs_chromium

ASSETS = [e.name for e in ENDPOINTS]
CHECKS = ("nullability", "primary_key", "quarantine")
SCHEDULES = {
    "finance_daily_schedule": "Scheduled At 03:00 AM UTC",
    "finance_weekly_full_refresh_schedule": "Scheduled At 04:00 AM UTC, only on Sunday",
}
FAILURE_SENSOR = "finance_run_failure_sensor"
MARTS_SENSOR = "finance_marts_automation"


@pytest.fixture(scope="module")
def shots() -> Screenshots:
    return Screenshots("sandbox")


@pytest.fixture(scope="module")
def ui(start_dagster_dev: Callable[..., DagsterDev], tmp_path_factory) -> DagsterDev:
    warehouse = tmp_path_factory.mktemp("warehouse") / "sandbox.duckdb"
    return start_dagster_dev(FINANCE_SOURCE="sandbox", FINANCE_DUCKDB_PATH=str(warehouse))


@pytest.fixture(scope="module")
def page(browser: Browser, ui: DagsterDev, shots: Screenshots) -> Iterator[Page]:
    """The UI open in a new browser profile, its first-visit dialog dismissed."""
    with opened_ui(browser, ui.url, shots) as page:
        yield page


@pytest.fixture(scope="module")
def finished_run(page: Page, shots: Screenshots) -> str:
    """Materialize all, clicked in the UI; the run page's address once it says Success."""
    return materialize_all(page, shots)


def test_asset_graph_shows_the_sixteen_assets_of_group_finance(
    page: Page, shots: Screenshots
) -> None:
    nav(page, "Deployment")
    page.get_by_role("link", name=re.compile(r"finance_assets$")).first.click()
    page.get_by_role("tab", name="Definitions").click()
    expect(page.get_by_text("finance", exact=True)).to_be_visible()
    expect(page.get_by_text("16 assets", exact=True)).to_be_visible()

    # The group's graph: the Catalog's group tag opens the lineage filtered to the group.
    nav(page, "Catalog")
    page.get_by_role("link", name=re.compile(r"\bfinance$")).first.click()
    expect(page.get_by_text('group:"finance"')).to_be_visible()
    for asset in ASSETS:
        expect(page.get_by_role("button", name=re.compile(rf"\b{asset}$"))).to_be_visible()
    shots.take(page, "asset-graph")


def test_materialize_all_runs_every_asset_with_its_checks_and_the_marts(
    page: Page, shots: Screenshots, finished_run: str
) -> None:
    checks = shipped_definitions().resolve_asset_graph().asset_check_keys
    page.goto(finished_run)
    expect(page.get_by_text("Success", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{len(ASSETS) + len(MARTS)} assets", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{len(checks)} checks", exact=True)).to_be_visible()
    # The run's first line says what it read; the marts' step, how many it built.
    log_filter = page.get_by_placeholder("Filter…")
    log_filter.fill("Reading")
    first_line = re.compile(r"^Reading sandbox \(seed 42, scale 1\) into ")
    expect(page.get_by_text(first_line)).to_be_visible()
    shots.take(page, "run-source")
    log_filter.fill("Building")
    expect(page.get_by_text(re.compile(rf"^Building {len(MARTS)} marts in "))).to_be_visible()
    shots.take(page, "run-marts")
    log_filter.fill("")
    log_filter.press("Escape")  # closes the filter's suggestions (a popover)
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible()
    shots.take(page, "run", docs="run.png")

    # Every asset of both groups now shows its latest materialization.
    for group, assets in (("finance_marts", MARTS), ("finance", ASSETS)):
        catalog(page, f'group:"{group}"')
        expect(page.get_by_text(re.compile(r"^Materialized"))).to_have_count(len(assets))
    page.get_by_role("link", name=re.compile(r"\bfinance$")).first.click()
    page.get_by_role("button", name=re.compile(r"\binvoices$")).click()
    expect(page.get_by_text("View in Asset Catalog")).to_be_visible()
    expect(page.get_by_text("sandbox (seed 42, scale 1)")).to_be_visible()
    shots.take(page, "asset-graph-after-run", docs="asset-graph.png")


def test_invoices_checks_passed_with_their_metadata(
    page: Page, shots: Screenshots, finished_run: str
) -> None:
    invoices = len(Sandbox(SandboxConfig(seed=42, scale=1)).records("invoices"))
    open_checks(page, "invoices")

    for check in CHECKS:
        expect(page.get_by_title(check, exact=True)).to_be_visible()

    result = select_check(page, "primary_key")
    expect(metadata_row(page, "duplicate_ids", "0")).to_be_visible()
    expect(metadata_row(page, "null_ids", "0")).to_be_visible()
    expect(metadata_row(page, "rows", f"{invoices}")).to_be_visible()
    expect(result).to_contain_text("Passed")
    shots.take(page, "invoices-primary-key")

    result = select_check(page, "quarantine")
    expect(metadata_row(page, "quarantined", "0")).to_be_visible()
    expect(metadata_row(page, "table", "finance._rejected")).to_be_visible()
    expect(result).to_contain_text("Passed")
    shots.take(page, "invoices-quarantine")

    result = select_check(page, "nullability")
    expect(page.get_by_text(re.compile(r"^No NULL in \d+ non-nullable columns\.$"))).to_be_visible()
    expect(metadata_row(page, "columns_checked")).to_be_visible()
    expect(metadata_row(page, "null_values", "0")).to_be_visible()
    expect(metadata_row(page, "rows_checked")).to_be_visible()
    expect(result).to_contain_text("Passed")
    shots.take(page, "invoices-checks", docs="invoices-checks.png")


def test_automation_shows_both_schedules_and_the_sensors(page: Page, shots: Screenshots) -> None:
    nav(page, "Automation")
    for schedule, when in SCHEDULES.items():
        row = page.get_by_role("link", name=re.compile(rf"\b{schedule}\b"))
        expect(row).to_be_visible()
        expect(row).to_contain_text(when)
    for sensor in (FAILURE_SENSOR, MARTS_SENSOR):
        expect(page.get_by_role("link", name=re.compile(rf"\b{sensor}\b"))).to_be_visible()
    shots.take(page, "automation")


def test_the_marts_automation_launches_no_run_after_materialize_all(
    page: Page, shots: Screenshots, ui: DagsterDev, finished_run: str
) -> None:
    # Materialize all built the marts in its own run: their sensor, running under dg dev,
    # does not rebuild them for it (Dagster ignores the run's updates of their deps).
    only_run_after_automation(page, ui.url, shots, MARTS_SENSOR)
