"""The report without the UI: real runs against the sandbox into temporary DuckDB files, a
real Dagster instance, the report in its three formats, its exit codes and its command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from io import StringIO
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from finance_assets.checks import CHECKS, NULLABILITY, PRIMARY_KEY, QUARANTINE
from finance_assets.endpoints import BY_NAME, ENDPOINTS
from finance_assets.report import (
    EXIT_ERROR_CHECK_FAILED,
    EXIT_NOTHING_TO_REPORT,
    EXIT_OK,
    FAIL,
    FORMATS,
    FRESH,
    NEVER_MATERIALIZED,
    NO_POLICY,
    WARN,
    AssetStatus,
    Report,
    build_report,
    print_report,
    render_json,
    render_markdown,
    render_plain,
)
from finance_assets.sandbox import Sandbox
from finance_assets_tests.harness import (
    SCALE,
    api_for,
    declare_organizations,
    failure_headline,
    non_nullable,
    run,
    shipped_definitions,
    sync_organization,
)

KEYS = sorted(e.name for e in ENDPOINTS)
# What the op evaluates with each materialization, and the severity it gives each (the
# shipped definitions add Dagster's column schema change check, evaluated in a step of
# its own, so never by the runs here).
SEVERITY = {name: "WARN" if name not in (NULLABILITY, PRIMARY_KEY, QUARANTINE) else "ERROR"
            for name in CHECKS}  # fmt: skip


def shipped_checks(key: str) -> list[str]:
    """The check names the report lists for an asset: every check the definitions declare."""
    defs = shipped_definitions()
    graph = defs.resolve_asset_graph()
    return sorted(k.name for k in graph.asset_check_keys if k.asset_key.to_user_string() == key)


def listed_keys() -> list[str]:
    """Every asset the report lists: the sixteen ingested ones and the marts over them
    (which the runs here do not materialize)."""
    return sorted(s.key.to_user_string() for s in shipped_definitions().resolve_all_asset_specs())


def ingested(report: Report) -> list[AssetStatus]:
    """The report's sixteen ingested assets, which the runs here materialize."""
    return [a for a in report.assets if a.key in KEYS]


def evaluated(asset: AssetStatus) -> list:  # noqa: ANN001 - report.CheckStatus
    """The asset's checks that the runs here evaluate (the op's own)."""
    return [c for c in asset.checks if c.name in SEVERITY]
POLICY = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=50), warn_window=timedelta(hours=26)
)


@dataclass
class Ran:
    """One real run into a real instance: what the report should say about it."""

    instance: dg.DagsterInstance
    home: Path  # the instance's DAGSTER_HOME (its dagster.yaml turns telemetry off)
    database: Path
    source: str
    result: dg.ExecuteInProcessResult
    started: datetime
    finished: datetime


def ran(sb: Sandbox, instance: dg.DagsterInstance, home: Path, database: Path, **kwargs) -> Ran:
    api = api_for(sb)
    started = datetime.now(timezone.utc)
    result = run(api, database, instance=instance, **kwargs)
    return Ran(instance, home, database, api.source, result, started, datetime.now(timezone.utc))


@contextmanager
def one_run(sb: Sandbox, folder: Path) -> Iterator[Ran]:
    """All sixteen assets run once into a new instance under ``folder``."""
    home = folder / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), set_dagster_home=False) as instance:
        yield ran(sb, instance, home, folder / "w.duckdb")


@pytest.fixture(scope="module")
def clean_sandbox(make_module_sandbox) -> Sandbox:
    return make_module_sandbox(scale=SCALE)


@pytest.fixture(scope="module")
def clean(clean_sandbox: Sandbox, tmp_path_factory) -> Iterator[Ran]:
    """One run on clean data, shared read-only by this module's tests."""
    with one_run(clean_sandbox, tmp_path_factory.mktemp("clean")) as done:
        assert done.result.success
        yield done


@pytest.fixture(scope="module")
def null_sandbox(make_module_sandbox) -> Sandbox:
    """Up to two records of every resource with a NULL in a non-nullable field."""
    return make_module_sandbox(scale=SCALE, null_violations=2)


@pytest.fixture(scope="module")
def nulls(null_sandbox: Sandbox, tmp_path_factory) -> Iterator[Ran]:
    """One run on the null-violating sandbox, shared read-only."""
    with one_run(null_sandbox, tmp_path_factory.mktemp("nulls")) as done:
        yield done


def by_key(report: Report) -> dict[str, AssetStatus]:
    return {a.key: a for a in report.assets}


def rows_in(database: Path, table: str) -> int:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(f"select count(*) from finance.{table}").fetchone()[0]


def expected_freshness(key: str) -> str:
    """Fresh right after a run, under whatever policy the project's definitions give now."""
    specs = {s.key.to_user_string(): s for s in shipped_definitions().resolve_all_asset_specs()}
    return NO_POLICY if specs[key].freshness_policy is None else FRESH


# ---------- clean data: every asset, every check, three formats, exit 0 ----------
def test_clean_run_reports_each_materialization_and_check(clean: Ran) -> None:
    report = build_report(clean.instance, shipped_definitions())
    assets = by_key(report)
    assert sorted(assets) == listed_keys()
    run_id = clean.result.run_id
    for key in set(assets) - set(KEYS):
        assert assets[key].materialized_at is None, key
    for key, asset in ((a.key, a) for a in ingested(report)):
        assert clean.started <= asset.materialized_at <= clean.finished, key
        assert asset.run_id == run_id
        assert asset.rows == rows_in(clean.database, key) > 0
        assert (asset.mode, asset.source) == ("full", clean.source)
        assert asset.freshness.state == expected_freshness(key)
        assert sorted(c.name for c in asset.checks) == shipped_checks(key)
        for check in evaluated(asset):
            assert (check.passed, check.severity, check.run_id) == (
                True, SEVERITY[check.name], run_id
            )
            assert check.description and not check.findings
            assert clean.started <= check.evaluated_at <= clean.finished
    assert report.failing == [] and report.exit_code == EXIT_OK


def test_plain_table(clean: Ran) -> None:
    report = build_report(clean.instance, shipped_definitions(), where=str(clean.home))
    lines = render_plain(report).splitlines()
    assert lines[0].startswith(f"Dagster instance {clean.home}, at ")
    assert lines[2].split() == [
        "asset",
        "last",
        "materialized",
        "rows",
        "mode",
        "source",
        "freshness",
    ]
    for asset in ingested(report):
        row = next(line for line in lines if line.startswith(asset.key + " "))
        when = asset.materialized_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        assert when in row and f" {asset.rows:,} " in row
        assert f" full  {clean.source}  {asset.freshness.state}" in row
        for check in evaluated(asset):
            cells = next(
                line.split(None, 4) for line in lines if line.split()[:2] == [asset.key, check.name]
            )
            assert cells == [
                asset.key, check.name, "passed", SEVERITY[check.name], check.description
            ]
    assert lines[-1] == "No ERROR check failed (exit 0)."


def test_markdown(clean: Ran) -> None:
    report = build_report(clean.instance, shipped_definitions(), where=str(clean.home))
    lines = render_markdown(report).splitlines()
    assert lines[0] == f"# Asset report: {clean.home}"
    assert "| asset | last materialized | rows | mode | source | freshness |" in lines
    assert "## Checks" in lines and "## Failures" not in lines
    for asset in ingested(report):
        when = asset.materialized_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        cells = [asset.key, when, f"{asset.rows:,}", "full", clean.source, asset.freshness.text()]
        assert "| " + " | ".join(cells) + " |" in lines
        for check in evaluated(asset):
            severity = SEVERITY[check.name]
            row = f"| {asset.key} | {check.name} | passed | {severity} | {check.description} |"
            assert row in lines
    assert lines[-1] == "No ERROR check failed (exit 0)."


def test_json(clean: Ran) -> None:
    report = build_report(clean.instance, shipped_definitions(), where=str(clean.home))
    document = json.loads(render_json(report))
    assert document["instance"] == str(clean.home)
    assert document["exit_code"] == 0 and document["failing_error_checks"] == []
    assert datetime.fromisoformat(document["generated_at"]) == report.generated_at
    assert [a["key"] for a in document["assets"]] == listed_keys()
    for asset in (a for a in document["assets"] if a["key"] in KEYS):
        at = datetime.fromisoformat(asset["materialized_at"])
        assert clean.started <= at <= clean.finished
        assert asset["run_id"] == clean.result.run_id
        assert asset["rows"] == rows_in(clean.database, asset["key"])
        assert (asset["mode"], asset["source"]) == ("full", clean.source)
        assert asset["freshness"]["state"] == expected_freshness(asset["key"])
        assert sorted(c["name"] for c in asset["checks"]) == shipped_checks(asset["key"])
        for check in (c for c in asset["checks"] if c["name"] in SEVERITY):
            assert check["passed"] is True and check["severity"] == SEVERITY[check["name"]]
            assert check["description"] and check["findings"] == []
            assert check["run_id"] == clean.result.run_id
            assert clean.started <= datetime.fromisoformat(check["evaluated_at"]) <= clean.finished
        nullability = next(c for c in asset["checks"] if c["name"] == NULLABILITY)["metadata"]
        assert nullability["null_values"] == 0 and nullability["columns_checked"] > 0


def test_the_command_prints_each_format_and_exits_0(
    clean: Ran, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(clean.home))
    for fmt, first in [
        ("plain", "Dagster instance"),
        ("markdown", "# Asset report"),
        ("json", "{"),
    ]:
        out = StringIO()
        assert print_report(fmt, out=out) == EXIT_OK
        assert out.getvalue().startswith(first) and str(clean.home) in out.getvalue()


# ---------- failures and exit codes ----------
def expected_nulls(sb: Sandbox, name: str) -> dict[tuple[str, str], set[str]]:
    """(table, column) -> ids of the sandbox's records with a NULL where the model forbids it."""
    endpoint = BY_NAME[name]
    out: dict[tuple[str, str], set[str]] = {}
    for record in sb.records(name):
        for field in non_nullable(endpoint.model):
            if record.get(field, "") is None:
                column = f"_{field}_count" if field in endpoint.children else field
                out.setdefault((f"finance.{name}", column), set()).add(str(record["id"]))
    return out


def test_null_violations_fail_the_report_with_what_the_checks_name(
    null_sandbox: Sandbox, nulls: Ran, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = build_report(nulls.instance, shipped_definitions())
    assert report.exit_code == EXIT_ERROR_CHECK_FAILED
    assert {(a.key, c.name) for a, c in report.failing} == {(k, NULLABILITY) for k in KEYS}
    plain, markdown = render_plain(report), render_markdown(report)
    document = json.loads(render_json(report))
    for asset in ingested(report):
        by_name = {c.name: c for c in asset.checks}
        nullability, primary_key = by_name[NULLABILITY], by_name[PRIMARY_KEY]
        quarantine = by_name[QUARANTINE]
        assert primary_key.passed and quarantine.passed
        assert (nullability.passed, nullability.severity) == (False, "ERROR")
        expected = expected_nulls(null_sandbox, asset.key)
        assert {(f.table, f.column): set(f.sample_ids) for f in nullability.findings} == expected
        counts = sum(f.count for f in nullability.findings)
        assert counts == nullability.metadata["null_values"] == sum(map(len, expected.values()))
        for finding in nullability.findings:
            line = (
                f"{finding.table}.{finding.column}: {finding.count} NULL(s); "
                f"sample ids: {', '.join(finding.sample_ids)}"
            )
            assert f"\n    - {line}\n" in plain and f"\n  - {line}\n" in markdown
        checks = next(a for a in document["assets"] if a["key"] == asset.key)["checks"]
        null_check = next(c for c in checks if c["name"] == NULLABILITY)
        assert null_check["passed"] is False and null_check["severity"] == "ERROR"
        assert {
            (f["table"], f["column"], f["count"], tuple(f["sample_ids"]))
            for f in null_check["findings"]
        } == {(f.table, f.column, f.count, f.sample_ids) for f in nullability.findings}
    verdict = f"{len(KEYS)} ERROR check(s) failed (exit 1): "
    assert plain.splitlines()[-1].startswith(verdict)
    assert "## Failures" in markdown and markdown.splitlines()[-1].startswith(verdict)
    assert document["exit_code"] == 1
    assert sorted(document["failing_error_checks"]) == [f"{k}:{NULLABILITY}" for k in KEYS]
    monkeypatch.setenv("DAGSTER_HOME", str(nulls.home))
    for fmt in FORMATS:
        assert print_report(fmt, out=StringIO()) == EXIT_ERROR_CHECK_FAILED


def test_a_warn_failure_keeps_exit_0_an_error_failure_does_not() -> None:
    """The latest result counts: a WARN failure, then an ERROR one, then a pass."""
    key = dg.AssetKey("invoices")
    with dg.instance_for_test() as instance:

        def evaluate(passed: bool, severity: dg.AssetCheckSeverity) -> Report:
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name="quarantine",
                    passed=passed,
                    severity=severity,
                    description="reported from outside a run",
                    metadata={
                        "quarantined": 3,
                        "table": "finance._rejected",
                        "sample_ids": dg.MetadataValue.json(["a", "b", "c"]),
                    },
                )
            )
            return build_report(instance, shipped_definitions())

        report = evaluate(False, dg.AssetCheckSeverity.WARN)
        quarantine = next(c for c in by_key(report)["invoices"].checks if c.name == QUARANTINE)
        assert (quarantine.passed, quarantine.severity) == (False, "WARN")
        assert [f.text() for f in quarantine.findings] == [
            "finance._rejected: 3 quarantined record(s); sample ids: a, b, c"
        ]
        assert report.exit_code == EXIT_OK
        assert any(
            line.split()[:4] == ["invoices", "quarantine", "FAILED", "WARN"]
            for line in render_plain(report).splitlines()
        )

        report = evaluate(False, dg.AssetCheckSeverity.ERROR)
        assert report.exit_code == EXIT_ERROR_CHECK_FAILED
        assert [(a.key, c.name) for a, c in report.failing] == [("invoices", "quarantine")]
        assert render_plain(report).splitlines()[-1] == (
            "1 ERROR check(s) failed (exit 1): invoices quarantine."
        )

        assert evaluate(True, dg.AssetCheckSeverity.ERROR).exit_code == EXIT_OK


# ---------- never run, the latest run, freshness ----------
def test_a_never_run_asset_is_listed_then_the_latest_run_is_reported(
    clean_sandbox: Sandbox, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), set_dagster_home=False) as instance:
        first = ran(clean_sandbox, instance, home, tmp_path / "w.duckdb", selection=["invoices"])
        report = build_report(instance, shipped_definitions())
        assets = by_key(report)
        assert sorted(assets) == listed_keys()  # the definitions', not only what ran
        assert assets["invoices"].run_id == first.result.run_id
        for key in set(KEYS) - {"invoices"}:
            assert assets[key].materialized_at is None and assets[key].rows is None
            assert [c.result for c in assets[key].checks] == ["never evaluated"] * len(
                shipped_checks(key)
            )
            assert assets[key].freshness.state in (NO_POLICY, NEVER_MATERIALIZED)
        assert report.exit_code == EXIT_OK
        assert any(
            line.split()[:3] == ["users", "never", "materialized"]
            for line in render_plain(report).splitlines()
        )
        users = json.loads(render_json(report))["assets"][-1]
        assert users["materialized_at"] is None and users["checks"][0]["passed"] is None

        second = ran(clean_sandbox, instance, home, tmp_path / "w.duckdb")
        for asset in ingested(build_report(instance, shipped_definitions())):
            mode = "incremental" if asset.key == "invoices" else "full"
            assert (asset.mode, asset.run_id) == (mode, second.result.run_id), asset.key
            assert second.started <= asset.materialized_at <= second.finished
            assert {c.run_id for c in evaluated(asset)} == {second.result.run_id}


def with_policy(policy: dg.FreshnessPolicy | None) -> dg.Definitions:
    """The project's definitions with ``policy`` on every asset (None: none at all)."""
    with warnings.catch_warnings():  # map_asset_specs is a preview API
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return shipped_definitions().map_asset_specs(
            func=lambda spec: spec.replace_attributes(freshness_policy=policy)
        )


def test_freshness_follows_the_policy_of_the_definitions(clean: Ran) -> None:
    defs = with_policy(POLICY)
    at = by_key(build_report(clean.instance, defs))["invoices"].materialized_at
    states = [
        by_key(build_report(clean.instance, defs, now=at + timedelta(hours=h)))["invoices"]
        for h in (1, 27, 51)
    ]
    assert [a.freshness.state for a in states] == [FRESH, WARN, FAIL]
    assert [a.freshness.text() for a in states] == [
        "fresh (1h old)",
        "warn (27h old > 26h)",
        "fail (51h old > 50h)",
    ]
    later = build_report(clean.instance, defs, now=at + timedelta(hours=27))
    assert "  warn (27h old > 26h)" in render_plain(later)
    document = json.loads(render_json(later))
    freshness = next(a for a in document["assets"] if a["key"] == "invoices")["freshness"]
    assert freshness == {
        "state": WARN,
        "age_seconds": 27 * 3600,
        "warn_window_seconds": 26 * 3600,
        "fail_window_seconds": 50 * 3600,
    }
    with dg.instance_for_test() as empty:
        never = by_key(build_report(empty, defs))["invoices"].freshness
        assert (never.state, never.warn_window, never.fail_window) == (
            NEVER_MATERIALIZED,
            timedelta(hours=26),
            timedelta(hours=50),
        )
    no_policy = build_report(clean.instance, with_policy(None)).assets
    assert {a.freshness.state for a in no_policy} == {NO_POLICY}
    assert "  no policy\n" in render_plain(build_report(clean.instance, with_policy(None)))


# ---------- nothing to report, and the command as cron and CI run it ----------
def test_nothing_to_report_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    with dg.instance_for_test():  # DAGSTER_HOME is this empty instance's while it is open
        out = StringIO()
        assert print_report(out=out) == EXIT_NOTHING_TO_REPORT
        assert out.getvalue().startswith("The Dagster instance at ")
        assert len(out.getvalue().strip().splitlines()) == 1
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    out = StringIO()
    assert print_report(out=out) == EXIT_NOTHING_TO_REPORT
    assert out.getvalue().startswith("DAGSTER_HOME is not set")


def test_the_command_in_its_own_process(nulls: Ran, tmp_path: Path) -> None:
    dagster_yaml = yaml.safe_load((nulls.home / "dagster.yaml").read_text())
    assert dagster_yaml["telemetry"] == {"enabled": False}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINANCE_", "DAGSTER_"))}
    done = subprocess.run(
        [sys.executable, "-m", "finance_assets.report", "--format", "json"],
        env={**env, "DAGSTER_HOME": str(nulls.home)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == EXIT_ERROR_CHECK_FAILED, done.stderr
    document = json.loads(done.stdout)
    assert document["instance"] == str(nulls.home) and document["exit_code"] == 1
    assert sorted(document["failing_error_checks"]) == [f"{k}:{NULLABILITY}" for k in KEYS]


# ---------- several organizations: per (asset, organization), and one that failed ----------
def org_rows(database: Path, table: str, organization: str) -> int:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(
            f"select count(*) from finance.{table} where _organization = ?", [organization]
        ).fetchone()[0]


def test_organizations_are_reported_each_and_a_failed_one_fails_the_report(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three organizations, one with a revoked refresh token: the two others' assets and
    checks are reported per organization, the third as failed with its sentence, exit 1."""
    books, database = declare_organizations(make_sandbox, tmp_path, monkeypatch)
    books["initech"].sandbox.configure(refresh_token="issued-again")  # the old one is revoked
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), set_dagster_home=False) as instance:
        started = datetime.now(timezone.utc)
        results = {key: sync_organization(key, instance) for key in books}
        finished = datetime.now(timezone.utc)
        defs = shipped_definitions()  # with the organizations file: partitioned
        report = build_report(instance, defs, where=str(home))
    landed, failed = ("acme", "globex"), results["initech"]
    assert all(results[k].success for k in landed) and not failed.success
    sentence = failure_headline(failed)
    assert sentence.startswith("organization initech: the token endpoint refused the refresh")

    assert [o.organization for o in report.organizations] == list(books)
    runs = {o.organization: o for o in report.organizations}
    for key in landed:
        assert (runs[key].status, runs[key].result) == ("SUCCESS", "succeeded")
        assert runs[key].reason is None
        assert runs[key].run_id == results[key].run_id and runs[key].job == "finance_daily"
    assert (runs["initech"].failed, runs["initech"].result) == (True, "FAILED")
    assert (runs["initech"].run_id, runs["initech"].reason) == (failed.run_id, sentence)
    assert report.failed_organizations == [runs["initech"]] and report.failing == []
    assert report.exit_code == EXIT_ERROR_CHECK_FAILED

    statuses = {(a.key, a.organization): a for a in report.assets}
    assert {k for k, o in statuses if o is not None} == set(KEYS)  # the marts are not partitioned
    for key in KEYS:
        assert sorted(o for k, o in statuses if k == key) == sorted(books)
        for organization in landed:
            asset = statuses[key, organization]
            assert started <= asset.materialized_at <= finished
            assert asset.run_id == results[organization].run_id
            assert asset.rows == org_rows(database, key, organization) > 0
            assert asset.mode == "full" and asset.freshness.state == expected_freshness(key)
            assert sorted(c.name for c in asset.checks) == shipped_checks(key)
            for check in evaluated(asset):
                assert check.run_id == results[organization].run_id, (key, organization)
                assert check.severity == SEVERITY[check.name]
                assert check.passed or check.severity == "WARN"
        never = statuses[key, "initech"]
        assert never.materialized_at is None and never.run_id is None
        assert {c.result for c in never.checks} == {"never evaluated"}, key
        schema = next(c for c in statuses[key, "acme"].checks if c.name not in SEVERITY)
        assert schema.run_id == results["acme"].run_id  # Dagster's check: acme's own run

    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the command reads the instance there
    out = StringIO()
    assert print_report("plain", out=out) == EXIT_ERROR_CHECK_FAILED
    plain = out.getvalue().splitlines()
    assert plain[2].split()[:3] == ["asset", "organization", "last"]
    for (key, organization), asset in statuses.items():
        if organization is None or asset.materialized_at is None:
            continue
        row = next(line for line in plain if line.split()[:2] == [key, organization])
        assert asset.materialized_at.strftime("%Y-%m-%d %H:%M:%S UTC") in row
        assert f" {asset.rows:,} " in row
        for check in evaluated(asset):
            cells = [key, organization, check.name, "passed", check.severity, check.description]
            assert cells in (line.split(None, 5) for line in plain)
    assert ["invoices", "initech", "never", "materialized"] in (line.split()[:4] for line in plain)
    table = plain.index(next(line for line in plain if line.startswith("organization ")))
    header = ["organization", "latest", "run", "job", "result", "at", "reason"]
    assert plain[table].split() == header
    rows = {line.split()[0]: line for line in plain[table + 1 : table + 4]}
    assert sorted(rows) == sorted(books)
    for key in landed:
        assert rows[key].split()[1:4] == [results[key].run_id[:8], "finance_daily", "succeeded"]
    assert rows["initech"].split()[1:4] == [failed.run_id[:8], "finance_daily", "FAILED"]
    assert rows["initech"].endswith(f" UTC  {sentence}")
    assert plain[-1] == "The latest run of 1 organization(s) failed (exit 1): initech."

    out = StringIO()  # the definitions as the command loads them, loaded once more: reused
    assert print_report("json", defs=defs, out=out) == EXIT_ERROR_CHECK_FAILED
    document = json.loads(out.getvalue())
    assert document["exit_code"] == 1 and document["failing_error_checks"] == []
    assert document["failing_organizations"] == ["initech"]
    organizations = {o["key"]: o for o in document["organizations"]}
    assert organizations["initech"] == {
        "key": "initech", "failed": True, "status": "FAILURE", "run_id": failed.run_id,
        "job": "finance_daily", "at": organizations["initech"]["at"], "reason": sentence,
    }  # fmt: skip
    assert datetime.fromisoformat(organizations["initech"]["at"]) <= finished
    for key in landed:
        assert (organizations[key]["failed"], organizations[key]["status"]) == (False, "SUCCESS")
    for entry in document["assets"]:
        if entry["key"] not in KEYS:
            assert entry["organization"] is None
            continue
        checks = {c["name"]: c for c in entry["checks"]}
        if entry["organization"] == "initech":
            assert entry["materialized_at"] is None
            assert {c["passed"] for c in checks.values()} == {None}
            continue
        assert entry["run_id"] == results[entry["organization"]].run_id
        assert entry["rows"] == org_rows(database, entry["key"], entry["organization"])
        for name in (NULLABILITY, PRIMARY_KEY, QUARANTINE):
            assert checks[name]["passed"] is True and checks[name]["severity"] == "ERROR"
    invoices = [e["organization"] for e in document["assets"] if e["key"] == "invoices"]
    assert invoices == list(books)
