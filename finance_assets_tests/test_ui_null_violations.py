"""The Dagster UI in a real browser, on an API that sends nulls its contract forbids.

A sandbox server started here with ``null_violations=1`` puts one record with a null in a
non-nullable field into every resource; the sandbox cannot confine that to some
resources, so its admin API then deletes those records from every other resource. The
UI, started with ``dg dev`` and pointed at the server as at a real API (its base URL,
token URL and demo credentials), must show the nullability check failed on exactly
the assets whose data still holds such nulls, as the sandbox's own records say, and
passed on the others; and the marts downstream not built, neither by Materialize all nor
by their automation sensor. Screenshots: ``finance_assets_tests/artifacts/ui/null-violations/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from finance_assets.endpoints import BY_NAME, ENDPOINTS, Endpoint
from finance_assets.marts import MARTS
from finance_assets.sandbox import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REFRESH_TOKEN,
    Sandbox,
)
from finance_assets.schema import child_table_name, table_name
from finance_assets_tests.harness import (
    DagsterDev,
    Screenshots,
    catalog,
    materialize_all,
    metadata_row,
    needs_chromium,
    null_violations,
    only_run_after_automation,
    open_checks,
    opened_ui,
    select_check,
)

pytestmark = needs_chromium

ASSETS = [e.name for e in ENDPOINTS]
CLEARED = ASSETS[1::2]  # resources whose null violations the sandbox is told to delete
MARTS_SENSOR = "finance_marts_automation"


@pytest.fixture(scope="module")
def sandbox(make_module_sandbox) -> Sandbox:
    sb = make_module_sandbox(null_violations=1)
    for resource in CLEARED:
        sb.mutate(resource, delete_ids=list(null_violations(sb, resource)))
    return sb


@pytest.fixture(scope="module")
def nulls(sandbox: Sandbox) -> dict[str, list[str]]:
    """Per asset, each null the sandbox serves in a field that is never null."""
    return {
        asset: [field for fields in null_violations(sandbox, asset).values() for field in fields]
        for asset in ASSETS
    }


def column_of(endpoint: Endpoint, field: str) -> str:
    """The column the nullability check names for a null field: ``array.field`` is in the
    array's child table, and a null array shows as the parent's ``_<array>_count``."""
    array, _, nested = field.partition(".")
    if nested:
        return f"{child_table_name(endpoint, array)}.{nested}"
    if field in endpoint.children:
        return f"{table_name(endpoint)}._{field}_count"
    return f"{table_name(endpoint)}.{field}"


@pytest.fixture(scope="module")
def shots() -> Screenshots:
    return Screenshots("null-violations")


@pytest.fixture(scope="module")
def ui(
    sandbox: Sandbox, start_dagster_dev: Callable[..., DagsterDev], tmp_path_factory
) -> DagsterDev:
    warehouse = tmp_path_factory.mktemp("warehouse") / "api.duckdb"
    return start_dagster_dev(
        FINANCE_SOURCE="api",
        FINANCE_API_BASE_URL=sandbox.base_url,
        FINANCE_API_TOKEN_URL=sandbox.token_url,
        FINANCE_API_CLIENT_ID=DEMO_CLIENT_ID,
        FINANCE_API_CLIENT_SECRET=DEMO_CLIENT_SECRET,
        FINANCE_API_REFRESH_TOKEN=DEMO_REFRESH_TOKEN,
        FINANCE_DUCKDB_PATH=str(warehouse),
    )


@pytest.fixture(scope="module")
def page(browser: Browser, ui: DagsterDev, shots: Screenshots) -> Iterator[Page]:
    """The UI open in a new browser profile, its first-visit dialog dismissed."""
    with opened_ui(browser, ui.url, shots) as page:
        yield page


def test_the_sandbox_serves_nulls_in_half_of_the_resources(nulls: dict[str, list[str]]) -> None:
    assert {asset for asset, found in nulls.items() if found} == set(ASSETS) - set(CLEARED)


def test_nullability_fails_on_exactly_the_assets_whose_data_has_nulls(
    page: Page, shots: Screenshots, nulls: dict[str, list[str]]
) -> None:
    # Everything loads as it came, then the blocking nullability checks fail the run and
    # the marts' step, downstream, is not executed.
    materialize_all(page, shots, ends="Failure")
    expect(page.get_by_text(re.compile("blocking asset checks? failed")).first).to_be_visible()
    not_built = re.compile(r"^Dependencies for step build_finance_marts failed: .* Not executing")
    expect(page.get_by_text(not_built)).to_be_visible()
    for asset, found in nulls.items():
        open_checks(page, asset)
        result = select_check(page, "nullability")
        expect(metadata_row(page, "null_values", str(len(found)))).to_be_visible()
        if found:
            sentence = page.get_by_text(re.compile(r"NULL\(s\) in non-nullable columns: "))
            for field in found:
                expect(sentence).to_contain_text(column_of(BY_NAME[asset], field))
            expect(result).to_contain_text("Failed")
        else:
            expect(result).to_contain_text("Passed")
        shots.take(page, f"{asset}-nullability")


def test_the_marts_are_not_built_and_their_automation_holds_them(
    page: Page, shots: Screenshots, ui: DagsterDev
) -> None:
    # Dagster shows a mart as Failed when the run that planned it failed (or, once the
    # page has loaded all it reads, as Never materialized): never as Materialized.
    catalog(page, 'group:"finance_marts"')
    expect(page.get_by_text(re.compile("^Loading"))).to_have_count(0)
    status = page.get_by_text(re.compile(r"^(Failed|Never materialized)$"))
    expect(status).to_have_count(len(MARTS))
    expect(page.get_by_text(re.compile("^Materialized"))).to_have_count(0)
    shots.take(page, "marts-not-materialized")
    # Their sensor, running under dg dev, sees the deps landed with failed blocking checks.
    only_run_after_automation(page, ui.url, shots, MARTS_SENSOR)
