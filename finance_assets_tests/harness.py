"""Shared pieces of the tests that run real materializations against the sandbox.

Real parts only: the sandbox over loopback HTTP, real Dagster materializations,
temporary DuckDB files, and the ``dagster`` CLI in a subprocess where a whole
process must be observed or killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pytest
import yaml
from dagster_duckdb import DuckDBResource
from playwright.sync_api import Browser, Locator, Page, expect

from finance_assets.assets import DEFAULT_NAMES, build_finance_assets
from finance_assets.endpoints import BY_NAME, ENDPOINTS, Endpoint
from finance_assets.models import DecimalType
from finance_assets.resources import FinanceApiResource
from finance_assets.sandbox import Sandbox
from finance_assets.schema import field_specs

SYNC_OP = DEFAULT_NAMES.sync_op  # the run-config key of the assets' op

SCALE = 0.02  # about 400 records: every resource present, a full load takes about a second
# Retries that cost milliseconds, so fault tests stay fast; real waits only where told (429).
FAST_RETRIES: dict[str, Any] = {
    "backoff_base_seconds": 0.01,
    "backoff_max_seconds": 0.05,
    "max_attempts": 10,
    "max_retry_seconds": 30.0,
}


def api_for(sb: Sandbox, **kwargs: Any) -> FinanceApiResource:
    """The resource pointed at a sandbox, with fast retries unless overridden."""
    return sandbox_api(sb, **{**FAST_RETRIES, **kwargs})


def sandbox_api(sb: Sandbox, **kwargs: Any) -> FinanceApiResource:
    """The resource pointed at a sandbox server (as the real API: base URL, credentials);
    ``kwargs`` override any setting."""
    connection = {
        "base_url": sb.base_url,
        "token_url": sb.token_url,
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "refresh_token": sb.refresh_token,
    }
    return FinanceApiResource(**{**connection, **kwargs})


def materialize(
    sb: Sandbox,
    database: Path,
    selection: list[str] | None = None,
    full_refresh: bool = False,
    margin: float | None = None,
    **api_settings,
) -> dg.ExecuteInProcessResult:
    """One real materialization; ``full_refresh``/``margin`` are the run config."""
    config: dict = {"full_refresh": full_refresh}
    if margin is not None:
        config["cursor_margin_seconds"] = margin
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [build_finance_assets()],
            selection=selection,
            resources={
                "finance_api": sandbox_api(sb, **api_settings),
                "duckdb": DuckDBResource(database=str(database)),
            },
            run_config={"ops": {SYNC_OP: {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )


def decimal_fields(model) -> list[str]:
    return [
        name
        for name, info in model.model_fields.items()
        if any(isinstance(m, DecimalType) for m in info.metadata)
    ]


def non_nullable(model) -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        args = getattr(info.annotation, "__args__", ())
        if type(None) not in args:
            out.append(name)
    return out


def tables_of(endpoint: Endpoint) -> Iterator[tuple[str, type, str | None]]:
    """(table, model, nested field or None) for the parent and each child table."""
    yield f"finance.{endpoint.name}", endpoint.model, None
    for field, model in endpoint.children.items():
        yield f"finance.{endpoint.name}__{field}", model, field


def expected_rows(sb: Sandbox, endpoint: Endpoint, field: str | None) -> list[dict]:
    records = sb.records(endpoint.name)
    if field is None:
        return records
    return [dict(item, parent_id=r["id"]) for r in records for item in (r[field] or [])]


def live_rows(
    endpoint: Endpoint, table: str, field: str | None, organization: str | None = None
) -> str:
    """SQL for the rows of records that still exist (soft-deleted ones stay in the table),
    of one organization when given."""
    parent = f"finance.{endpoint.name}"
    mine = f" and _organization = '{organization}'" if organization else ""
    if field is None:
        return f"(select * from {parent} where _deleted_at is null{mine})"
    return (
        f"(select * from {table} where parent_id in "
        f"(select id from {parent} where _deleted_at is null{mine}){mine})"
    )


def assert_warehouse_equals_sandbox(
    sb: Sandbox, database: Path, organization: str | None = None
) -> None:
    """Live rows (of ``organization`` when given) equal the sandbox's data: counts, ids,
    exact money sums, null counts."""
    with duckdb.connect(str(database), read_only=True) as conn:
        for endpoint in ENDPOINTS:
            for table, model, field in tables_of(endpoint):
                rows = expected_rows(sb, endpoint, field)
                live = live_rows(endpoint, table, field, organization)
                got = conn.execute(f"select count(*) from {live}").fetchone()[0]
                assert got == len(rows), table
                for column in decimal_fields(model):
                    want = sum((r[column] for r in rows if r[column] is not None), Decimal(0))
                    total = conn.execute(f"select coalesce(sum({column}), 0) from {live}")
                    assert Decimal(total.fetchone()[0]) == want, f"{table}.{column}"
                for column in model.model_fields:
                    if column in endpoint.children:
                        continue
                    want_nulls = sum(1 for r in rows if r.get(column) is None)
                    nulls = conn.execute(f"select count(*) from {live} where {column} is null")
                    assert nulls.fetchone()[0] == want_nulls, f"{table}.{column} nulls"
            live = live_rows(endpoint, "", None, organization)
            ids = {r[0] for r in conn.execute(f"select id from {live}").fetchall()}
            assert ids == {r["id"] for r in sb.records(endpoint.name)}, endpoint.name


def snapshot(database: Path) -> dict[str, list]:
    """Every data table's rows except the load time, for 'nothing changed' comparisons."""
    out = {}
    with duckdb.connect(str(database), read_only=True) as conn:
        tables = conn.execute(
            "select table_name from information_schema.tables where table_schema = 'finance' "
            "and table_name not like '\\_%' escape '\\'"  # data tables, not bookkeeping
        ).fetchall()
        for (table,) in tables:
            described = conn.execute(f"select * from finance.{table} limit 0").description
            columns = [d[0] for d in described if d[0] != "_loaded_at"]
            select = ", ".join(f'"{c}"' for c in columns)
            out[table] = conn.execute(
                f"select {select} from finance.{table} order by all"
            ).fetchall()
    return out



def shipped_definitions() -> dg.Definitions:
    """The definitions as Dagster loads them (the defs folder), from the environment now."""
    from finance_assets.definitions import defs

    return defs()


def run(
    api: FinanceApiResource,
    database: Path,
    selection: list[str] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """One real materialization (all assets unless ``selection``); never raises on failure."""

    def go(inst: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [build_finance_assets()],
            selection=selection,
            resources={"finance_api": api, "duckdb": DuckDBResource(database=str(database))},
            instance=inst,
            raise_on_error=False,
        )

    # In-memory storage unless told otherwise: sqlite event storage is most of a small run.
    return go(instance or dg.DagsterInstance.ephemeral())


def failure_message(result: dg.ExecuteInProcessResult, headline: bool = False) -> str:
    """The run's step failure message without a stack.

    Dagster wraps an exception the op did not turn into ``dg.Failure`` in a generic
    step error; the user's sentence is then its innermost cause (shown under it in
    the UI), which is returned unless ``headline``.
    """
    failures = result.get_step_failure_events()
    assert failures, "the run did not fail"
    error = failures[0].step_failure_data.error
    assert error is not None
    while error.cause is not None and not headline:
        error = error.cause
    return error.message.strip()


def failure_headline(result: dg.ExecuteInProcessResult) -> str:
    """The sentence a failed run shows as its headline (the op's ``dg.Failure``)."""
    failures = result.get_step_failure_events()
    assert failures, "the run did not fail"
    user_failure = failures[0].step_failure_data.user_failure_data
    assert user_failure is not None, failure_message(result)
    return str(user_failure.description)


def all_tables(database: Path) -> dict[str, list[tuple]]:
    """Every table of the file (data and bookkeeping) with every column, sorted rows.

    Stricter than ``test_assets.snapshot``: a failed run must not touch even load times,
    cursors or the quarantine.
    """
    out: dict[str, list[tuple]] = {}
    with duckdb.connect(str(database), read_only=True) as conn:
        names = conn.execute(
            "select table_schema, table_name from information_schema.tables order by all"
        ).fetchall()
        for schema, table in names:
            out[f"{schema}.{table}"] = conn.execute(
                f'select * from "{schema}"."{table}" order by all'
            ).fetchall()
    return out


def cli_env(sb: Sandbox, database: Path, home: Path, **overrides: str) -> dict[str, str]:
    """Environment of a ``dagster`` CLI run against the sandbox, with temporary paths."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINANCE_", "DAGSTER_"))}
    env.update(
        FINANCE_API_BASE_URL=sb.base_url,
        FINANCE_API_TOKEN_URL=sb.token_url,
        FINANCE_API_CLIENT_ID=sb.client_id,
        FINANCE_API_CLIENT_SECRET=sb.client_secret,
        FINANCE_API_REFRESH_TOKEN=sb.refresh_token,
        FINANCE_DUCKDB_PATH=str(database),
        DAGSTER_HOME=str(home),
    )
    env.update(overrides)
    return env


CLI_MATERIALIZE = [
    sys.executable, "-m", "dagster", "asset", "materialize",
    "-m", "finance_assets.definitions", "--select", "*",
]


def start_cli(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """``dagster asset materialize --select '*'`` in its own process group (to kill it whole).

    Output goes to ``cwd/stdout.txt`` and ``cwd/stderr.txt`` (a pipe could fill and stall it).
    """
    cwd.mkdir(parents=True, exist_ok=True)
    with open(cwd / "stdout.txt", "wb") as out, open(cwd / "stderr.txt", "wb") as err:
        return subprocess.Popen(
            CLI_MATERIALIZE, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True
        )


def cli_output(cwd: Path) -> str:
    """What a CLI run started by ``start_cli`` printed, stdout then stderr."""
    return "".join(
        (cwd / name).read_text(errors="replace") for name in ("stdout.txt", "stderr.txt")
    )


# ---------- several organizations (each its own sandbox server and credentials) ----------

# key -> (seed, scale, requests per minute or None): three organizations' books, with
# different seeds, sizes and limits.
ORGANIZATIONS: dict[str, tuple[int, float, int | None]] = {
    "acme": (11, 0.01, None), "globex": (12, 0.02, 6000), "initech": (13, 0.015, 3000),
}  # fmt: skip
SINGLE_CONNECTION_VARIABLES = (
    "FINANCE_SOURCE", "FINANCE_API_BASE_URL", "FINANCE_API_TOKEN_URL", "FINANCE_API_CLIENT_ID",
    "FINANCE_API_CLIENT_SECRET", "FINANCE_API_REFRESH_TOKEN",
)  # fmt: skip


@dataclass
class Books:
    """One declared organization and the sandbox serving its books."""

    key: str
    sandbox: Sandbox


def declare_organizations(
    make_sandbox: Callable[..., Sandbox],
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, tuple[int, float, int | None]] = ORGANIZATIONS,
) -> tuple[dict[str, Books], Path]:
    """Organizations declared in a file under ``folder``, each its own sandbox started by
    ``make_sandbox`` with credentials of its own, the secrets in the environment (named
    ``<KEY>_CLIENT_ID`` and so on); returns the books and the warehouse file the
    environment points at."""
    books, declared = {}, []
    for key, (seed, scale, limit) in settings.items():
        sb = make_sandbox(
            seed=seed, scale=scale, rate_limit=limit,
            client_id=f"{key}-client", client_secret=f"{key}-secret", refresh_token=f"{key}-rt",
        )  # fmt: skip
        books[key] = Books(key, sb)
        prefix = key.upper()
        for what, value in (("CLIENT_ID", sb.client_id), ("CLIENT_SECRET", sb.client_secret),
                            ("REFRESH_TOKEN", sb.refresh_token)):  # fmt: skip
            monkeypatch.setenv(f"{prefix}_{what}", value)
        declared.append(
            {
                "key": key,
                "base_url": sb.base_url,
                "token_url": sb.token_url,
                "client_id_env": f"{prefix}_CLIENT_ID",
                "client_secret_env": f"{prefix}_CLIENT_SECRET",
                "refresh_token_env": f"{prefix}_REFRESH_TOKEN",
                **({"rate_limit_per_minute": limit} if limit else {}),
            }
        )
    file = folder / "organizations.yaml"
    file.write_text(yaml.safe_dump({"organizations": declared}))
    for name in SINGLE_CONNECTION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FINANCE_ORGANIZATIONS_FILE", str(file))
    monkeypatch.setenv("FINANCE_DUCKDB_PATH", str(folder / "warehouse.duckdb"))
    return books, folder / "warehouse.duckdb"


def sync_organization(
    organization: str, instance: dg.DagsterInstance, job: str = "finance_daily"
) -> dg.ExecuteInProcessResult:
    """One run of a shipped job for one organization's partition, into ``instance``;
    never raises on failure."""
    defs = shipped_definitions()
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=organization,
        instance=instance,
        raise_on_error=False,
        resources={"finance_api": fast_resource(defs)},
    )


def fast_resource(defs: dg.Definitions) -> FinanceApiResource:
    """The definitions' API resource with retries that cost milliseconds."""
    return defs.resources["finance_api"].model_copy(update=FAST_RETRIES)


# ---------- the Dagster UI in a real browser (test_ui*.py) ----------

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DG = Path(sys.executable).with_name("dg")
# Debian's Chromium (``apt-get install chromium``); Playwright's own browser download is
# not used. The flags keep it off the network it would otherwise call on its own.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)",
)
# Every step's screenshot lands here (gitignored); UPDATE_SCREENSHOTS=1 also copies the
# README's three into docs/.
UI_ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "ui"
DOCS = PROJECT_ROOT / "docs"
VIEWPORT = {"width": 1600, "height": 1000}
UI_START_SECONDS = 120
EXPECT_SECONDS = 15  # what the UI is expected to show, after a click, within
RUN_SECONDS = 240  # a Materialize all, from the click to the run page's Success
SENSOR_TICK_SECONDS = 90  # an automation sensor's next tick (every 30 s), on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """``dg dev`` from the project root, as a user starts it, on a free port with its own
    temporary ``DAGSTER_HOME`` (telemetry off) and only the ``FINANCE_*`` variables given.

    It runs in its own process group (the webserver, the daemon, the code server and
    each run are its children), stopped whole by ``stop``.
    """

    def __init__(self, workdir: Path, **finance: str) -> None:
        self.workdir = workdir
        self.home = workdir / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "dg-dev.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FINANCE_", "DAGSTER_"))}
        env.update(DAGSTER_HOME=str(self.home), VIRTUAL_ENV=sys.prefix, **finance)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DagsterDev:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(DG), "dev", "--port", str(self.port)],
                cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + UI_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dg dev exited ({self.process.returncode}):\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/server_info", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"dg dev did not answer in {UI_START_SECONDS} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        """SIGTERM to the whole process group (dg dev shuts its services down in a few
        seconds), then SIGKILL to any member still running after 30 s."""
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes], grace_seconds: float = 30) -> None:
    """SIGTERM to the group a process leads (started with ``start_new_session``), then
    SIGKILL to any member still running after ``grace_seconds``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
    while time.monotonic() < deadline and _running_in_group(process.pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _running_in_group(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies, which only wait to be reaped
    by their parent, do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp ...: split after the command, which may hold spaces
            state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                return True
    return False


class Screenshots:
    """Numbered screenshots of one scenario's steps under ``UI_ARTIFACTS/<scenario>``."""

    def __init__(self, scenario: str) -> None:
        self.folder = UI_ARTIFACTS / scenario
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.taken = 0

    def take(self, page: Page, step: str, docs: str | None = None) -> Path:
        """Save the page as ``NN-step.png``; with ``UPDATE_SCREENSHOTS=1``, also as
        ``docs/<docs>`` (the README's pictures)."""
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{step}.png"
        page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        if docs and os.environ.get("UPDATE_SCREENSHOTS") == "1":
            DOCS.mkdir(exist_ok=True)
            shutil.copyfile(path, DOCS / docs)
        return path


def nav(page: Page, item: str) -> None:
    """Click an entry of the UI's left navigation (Overview, Runs, Catalog, ...)."""
    page.get_by_role("navigation").get_by_role("link", name=re.compile(rf"\b{item}$")).click()


def dismiss_first_visit_dialog(page: Page, shots: Screenshots) -> None:
    """A new instance greets its first visitor with a dialog; Skip closes it for good."""
    dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    expect(dialog).to_be_visible()
    shots.take(page, "first-visit-dialog")
    dialog.get_by_role("button", name="Skip").click()
    expect(dialog).to_be_hidden()


@contextlib.contextmanager
def opened_ui(browser: Browser, url: str, shots: Screenshots) -> Iterator[Page]:
    """The UI open in a new browser profile, its first-visit dialog dismissed."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(url)
    dismiss_first_visit_dialog(page, shots)
    try:
        yield page
    finally:
        context.close()


def materialize_all(page: Page, shots: Screenshots, ends: str = "Success") -> str:
    """Lineage, Materialize all, then the run the notification links to, watched until it
    ends; returns the run page's address once it says how it ``ends``."""
    nav(page, "Lineage")
    page.get_by_role("button", name=re.compile(r"Materialize all$")).click()
    notifications = page.get_by_role("region", name=re.compile("Notifications"))
    expect(notifications.get_by_text("Launched run")).to_be_visible(timeout=60_000)
    notifications.get_by_role("link", name="View").click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    expect(status).to_be_visible(timeout=RUN_SECONDS * 1000)
    shots.take(page, "finished-run")
    assert status.inner_text() == ends, f"the run ended {status.inner_text()}"
    return page.url


def catalog(page: Page, selection: str) -> None:
    """Catalog, filtered by an asset selection typed into its search box (``key:"users"``,
    ``group:"finance_marts"``). The Catalog renders only the rows scrolled into view, and
    the 23 assets no longer fit: a row is found by filtering, as a person would."""
    nav(page, "Catalog")
    page.locator(".CodeMirror").first.click()  # the search box (a code editor)
    page.keyboard.type(selection)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"[?&]asset-selection="))
    page.keyboard.press("Escape")  # closes the box's suggestions (a popover)
    expect(page.locator("[data-radix-popper-content-wrapper]")).to_have_count(0)


def open_checks(page: Page, asset: str) -> None:
    """Catalog, the asset, its Checks tab."""
    catalog(page, f'key:"{asset}"')
    page.get_by_role("link", name=re.compile(rf"^{asset}( {asset})?$")).click()
    page.get_by_role("tab", name="Checks").click()
    expect(page).to_have_url(re.compile(rf"/assets/{asset}\?(.*&)?view=checks"))
    expect(page.get_by_role("tab", name="Checks", selected=True)).to_be_visible()


def select_check(page: Page, check: str) -> Locator:
    """Click a check in the asset's list of checks; returns its 'Evaluation result' (read
    it after something only this check shows, such as its metadata: the panel may still
    show the check selected before for a moment)."""
    page.get_by_title(check, exact=True).click()
    expect(page).to_have_url(re.compile(rf"[?&]checkDetail={check}(&|$)"))
    result = page.get_by_text("Evaluation result", exact=True).locator("..")
    expect(result).to_be_visible()
    return result


def metadata_row(page: Page, key: str, value: str | None = None) -> Locator:
    """A row of the metadata table: its key, and its value when given."""
    name = f"{key} {value}" if value is not None else key
    return page.get_by_role("row", name=re.compile(rf"^{re.escape(name)}\b"))


def graphql(url: str, query: str) -> dict[str, Any]:
    """One query to the UI's GraphQL API (what its pages read)."""
    response = httpx.post(f"{url}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    return response.json()["data"]


def finished_runs(url: str) -> list[dict[str, Any]]:
    """The instance's runs, newest first: id, status, end time (None while running)."""
    return graphql(url, "{ runsOrError { ... on Runs { results { runId status endTime } } } }")[
        "runsOrError"
    ]["results"]


def sensor_tick_after(url: str, sensor: str, after: float) -> dict[str, Any]:
    """The first tick of ``sensor`` (of the project's code location) at or after the time
    ``after``, waited for: its status and the runs it launched. An automation sensor ticks
    every 30 s, so this waits at most about that long."""
    query = f"""{{ sensorOrError(sensorSelector: {{repositoryLocationName: "finance_assets",
        repositoryName: "__repository__", sensorName: "{sensor}"}}) {{ ... on Sensor {{
        sensorState {{ status ticks(limit: 20) {{ timestamp status runIds }} }} }} }} }}"""
    deadline = time.monotonic() + SENSOR_TICK_SECONDS
    while True:
        state = graphql(url, query)["sensorOrError"]["sensorState"]
        assert state["status"] == "RUNNING", state
        done = [t for t in state["ticks"] if t["timestamp"] >= after and t["status"] != "STARTED"]
        if done:
            return min(done, key=lambda t: t["timestamp"])
        assert time.monotonic() < deadline, f"{sensor} did not tick in {SENSOR_TICK_SECONDS} s"
        time.sleep(1)


def only_run_after_automation(page: Page, url: str, shots: Screenshots, sensor: str) -> None:
    """The one run there is (Materialize all) ended, ``sensor`` then ticked and launched
    nothing, and the Runs page lists that one run alone."""
    (run,) = finished_runs(url)
    assert run["endTime"], run
    tick = sensor_tick_after(url, sensor, run["endTime"])
    assert tick["runIds"] == [], tick
    assert [r["runId"] for r in finished_runs(url)] == [run["runId"]]
    nav(page, "Runs")
    run_ids = page.get_by_role("link").filter(has_text=re.compile(r"^[0-9a-f]{8}$"))
    expect(run_ids).to_have_count(1)
    expect(run_ids).to_have_text(run["runId"][:8])
    shots.take(page, "runs-after-automation")


def null_violations(sb: Sandbox, resource: str) -> dict[str, list[str]]:
    """Records the sandbox serves with a null in a field (or a nested item's field) the
    schema says is never null: id -> the fields."""
    specs = field_specs(BY_NAME[resource].model)
    found: dict[str, list[str]] = {}
    for record in sb.records(resource):
        fields = [s.name for s in specs if not s.nullable and record.get(s.name) is None]
        for spec in specs:
            if spec.item_model is None or not record.get(spec.name):
                continue
            item_specs = [s for s in field_specs(spec.item_model) if not s.nullable]
            fields += [
                f"{spec.name}.{s.name}"
                for item in record[spec.name]
                for s in item_specs
                if item.get(s.name) is None
            ]
        if fields:
            found[record["id"]] = fields
    return found
