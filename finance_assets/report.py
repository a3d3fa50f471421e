"""Check reports without the UI: the latest materialization and check results of every asset.

``python -m finance_assets.report [--format plain|markdown|json]`` (or ``make report``)
reads the Dagster instance at ``DAGSTER_HOME`` and prints, per asset of the project's
definitions, its latest materialization (when, rows, mode, source), its freshness under
its policy and each check's latest result, with what a failure names (tables, columns,
counts, sample ids).

With several organizations declared (``FINANCE_ORGANIZATIONS_FILE`` or ``organizations:``
in ``defs.yaml``, read from the environment as ``dg`` reads it), the assets and their
checks are partitioned by organization, and the report is per (asset, organization):
that partition's latest materialization, freshness and each check's latest result for
it. It also lists each organization's latest run (the newest run tagged
``finance/organization`` or ``dagster/partition`` with its key) and, when that run
failed, the sentence it failed with, which names the organization (``organization
initech: the token endpoint refused the refresh token ...``). Without organizations
the report is as before: one row per asset, no organization column.

The exit code is for cron and CI:

- 0: no ERROR-severity check's latest result failed (WARN failures do not count) and,
  with organizations, no organization's latest run failed;
- 1: at least one ERROR check's latest result failed, or (with organizations) an
  organization's latest run failed: one organization whose refresh token was revoked
  or whose API is down fails the report as an ERROR check failure does;
- 2: nothing to report: ``DAGSTER_HOME`` unset, relative or not a directory, or the
  instance holds no materialization, check result or organization run of any of the
  project's assets.

(``make report`` turns any non-zero exit into make's own 2; cron and CI that must tell
1 from 2 call the module.)

The assets and checks come from the definitions, not from the instance, so an asset
never run is listed as such instead of vanishing. Reading, building the report and
rendering it are separate functions, so each format renders the same ``Report``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter

from finance_assets.alerts import describe_failed_run
from finance_assets.assets import ORGANIZATION_TAG
from finance_assets.checks import NULLABILITY, PRIMARY_KEY, QUARANTINE
from finance_assets.definitions import defs as project_defs
from finance_assets.schema import PARENT_ID_COLUMN, POSITION_COLUMN

FORMATS = ("plain", "markdown", "json")
EXIT_OK, EXIT_ERROR_CHECK_FAILED, EXIT_NOTHING_TO_REPORT = 0, 1, 2

# Freshness states, as the report prints them.
FRESH, WARN, FAIL = "fresh", "warn", "fail"
NEVER_MATERIALIZED, NO_POLICY = "never materialized", "no policy"

ROW_COUNT = "dagster/row_count"  # a materialization's rows, as Dagster's UI reads them
PARTITION_TAG = "dagster/partition"  # the partition (organization) a run was launched for
# How many check executions are read at a time when the latest one has no result.
HISTORY_PAGE = 20
# How many executions of an unpartitioned check of a partitioned asset (Dagster's column
# schema change check) are read back for the runs of each organization, at most.
HISTORY_LIMIT = 1000


# ---------- the report's data ----------
@dataclass(frozen=True)
class Finding:
    """One thing a failed check names: where, what, how many, which rows."""

    table: str | None
    column: str | None
    problem: str  # "NULL(s)", "duplicate key(s)", "quarantined record(s)", "table missing", ...
    count: int | None = None
    sample_ids: tuple[str, ...] = ()

    def text(self) -> str:
        where = ".".join(p for p in (self.table, self.column) if p and p != "*")
        what = self.problem if self.count is None else f"{self.count} {self.problem}"
        samples = f"; sample ids: {', '.join(self.sample_ids)}" if self.sample_ids else ""
        return f"{where}: {what}{samples}" if where else f"{what}{samples}"


@dataclass(frozen=True)
class CheckStatus:
    """A check's latest result; ``passed`` is None when it has never been evaluated."""

    name: str
    passed: bool | None = None
    severity: str | None = None  # "ERROR" or "WARN"
    description: str | None = None
    evaluated_at: datetime | None = None
    run_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()

    @property
    def fails_report(self) -> bool:
        """An ERROR check whose latest result failed: the report exits 1."""
        return self.passed is False and self.severity == "ERROR"

    @property
    def result(self) -> str:
        if self.passed is None:
            return "never evaluated"
        return "passed" if self.passed else "FAILED"


@dataclass(frozen=True)
class Freshness:
    """The asset's freshness under its time-window policy, from its latest materialization."""

    state: str  # FRESH, WARN, FAIL, NEVER_MATERIALIZED, NO_POLICY (or names another policy)
    warn_window: timedelta | None = None
    fail_window: timedelta | None = None
    age: timedelta | None = None

    def text(self) -> str:
        if self.state in (FRESH, WARN, FAIL) and self.age is not None:
            window = {WARN: self.warn_window, FAIL: self.fail_window}.get(self.state)
            limit = f" > {_hours(window)}" if window else ""
            return f"{self.state} ({_hours(self.age)} old{limit})"
        return self.state


@dataclass(frozen=True)
class AssetStatus:
    """An asset's (or, with organizations, one partition's) latest materialization, its
    freshness and its checks' latest results."""

    key: str
    freshness: Freshness
    checks: tuple[CheckStatus, ...] = ()
    materialized_at: datetime | None = None
    run_id: str | None = None
    rows: int | None = None
    mode: str | None = None
    source: str | None = None
    organization: str | None = None  # the partition; None for an unpartitioned asset

    @property
    def label(self) -> str:
        """The key, with the organization as Dagster writes a partition: ``invoices[acme]``."""
        return self.key if self.organization is None else f"{self.key}[{self.organization}]"


@dataclass(frozen=True)
class OrganizationRun:
    """An organization's latest run; ``status`` (Dagster's run status) is None when it has
    never run. A failed run's ``reason`` is its headline, the sentence naming the
    organization."""

    organization: str
    status: str | None = None
    run_id: str | None = None
    job: str | None = None
    at: datetime | None = None  # when it ended (or started, or was created, while going)
    reason: str | None = None

    @property
    def failed(self) -> bool:
        """The latest run failed: the report exits 1."""
        return self.status == dg.DagsterRunStatus.FAILURE.value

    @property
    def result(self) -> str:
        if self.status is None:
            return "never run"
        if self.failed:
            return "FAILED"
        return RUN_RESULTS.get(self.status, self.status.lower().replace("_", " "))


RUN_RESULTS = {"SUCCESS": "succeeded", "STARTED": "running"}


@dataclass(frozen=True)
class Report:
    """Everything the report prints, in the definitions' assets, sorted by key."""

    instance: str
    generated_at: datetime
    assets: tuple[AssetStatus, ...]
    organizations: tuple[OrganizationRun, ...] = ()  # empty without organizations declared

    @property
    def failing(self) -> list[tuple[AssetStatus, CheckStatus]]:
        return [(a, c) for a in self.assets for c in a.checks if c.fails_report]

    @property
    def failed_organizations(self) -> list[OrganizationRun]:
        return [o for o in self.organizations if o.failed]

    @property
    def empty(self) -> bool:
        """No materialization, no check result of any asset and no organization's run:
        nothing to report on."""
        return not any(
            a.materialized_at or any(c.passed is not None for c in a.checks) for a in self.assets
        ) and not any(o.status is not None for o in self.organizations)

    @property
    def exit_code(self) -> int:
        if self.empty:
            return EXIT_NOTHING_TO_REPORT
        failed = self.failing or self.failed_organizations
        return EXIT_ERROR_CHECK_FAILED if failed else EXIT_OK


# ---------- what to report: the definitions ----------
def project_assets(
    defs: dg.Definitions,
) -> list[tuple[dg.AssetSpec, list[dg.AssetCheckSpec]]]:
    """Every asset of the definitions with its check specs, sorted by key."""
    checks: dict[dg.AssetKey, list[dg.AssetCheckSpec]] = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        for spec in assets_def.check_specs:
            checks.setdefault(spec.asset_key, []).append(spec)
    specs = sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())
    return [(s, checks.get(s.key, [])) for s in specs]


# ---------- reading the instance ----------
def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> dg.EventLogEntry | None:
    """The asset's latest materialization event (only successful steps record one), of
    ``partition`` when given."""
    if partition is None:
        return instance.get_latest_materialization_event(key)
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    return found.records[0].event_log_entry if found.records else None


def latest_check_evaluation(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, partition: str | None = None
) -> dg.EventLogEntry | None:
    """The check's latest evaluation event, of ``partition`` when given.

    The instance's latest execution of a check may be only planned: its run is still
    going, or failed before the check ran. The latest result is then an earlier one, so
    the storage's execution history is read back until an evaluation turns up.
    """
    storage = instance.event_log_storage
    only = PartitionKeyFilter(key=partition) if partition is not None else None
    record = storage.get_latest_asset_check_execution_by_key([key], partition_filter=only).get(key)
    if record is None:
        return None
    if record.event is not None and record.event.asset_check_evaluation is not None:
        return record.event
    cursor = None
    while True:
        history = storage.get_asset_check_execution_history(
            key, limit=HISTORY_PAGE, cursor=cursor, partition_filter=only
        )
        for earlier in history:
            if earlier.event is not None and earlier.event.asset_check_evaluation is not None:
                return earlier.event
        if len(history) < HISTORY_PAGE:
            return None
        cursor = history[-1].id


def latest_evaluations_by_run_organization(
    instance: dg.DagsterInstance,
    key: dg.AssetCheckKey,
    organizations: Sequence[str],
    run_organization: Callable[[str], str | None],
) -> dict[str, dg.EventLogEntry]:
    """Of a check that is not partitioned on an asset that is (Dagster's column schema
    change check), the latest evaluation made by each organization's runs: its
    evaluations carry no partition, the run that made one names its organization. Reads
    back at most ``HISTORY_LIMIT`` executions; an organization none of them is from is
    left out (never evaluated)."""
    found: dict[str, dg.EventLogEntry] = {}
    cursor, read = None, 0
    while read < HISTORY_LIMIT and len(found) < len(organizations):
        history = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=HISTORY_PAGE, cursor=cursor
        )
        for record in history:
            event = record.event
            if event is None or event.asset_check_evaluation is None:
                continue
            whose = run_organization(record.run_id)
            if whose in organizations and whose not in found:
                found[whose] = event
        read += len(history)
        if len(history) < HISTORY_PAGE:
            break
        cursor = history[-1].id
    return found


def _run_organizations(instance: dg.DagsterInstance) -> Callable[[str], str | None]:
    """A run's organization by its tags (read once per run)."""
    known: dict[str, str | None] = {}

    def of(run_id: str) -> str | None:
        if run_id not in known:
            run = instance.get_run_by_id(run_id)
            tags = run.tags if run is not None else {}
            known[run_id] = tags.get(ORGANIZATION_TAG) or tags.get(PARTITION_TAG)
        return known[run_id]

    return of


def organization_keys(
    instance: dg.DagsterInstance, specs: Iterable[dg.AssetSpec]
) -> list[str]:
    """The organizations: the partition keys of the partitioned assets, in their order
    (none without organizations declared)."""
    keys: dict[str, None] = {}
    for spec in specs:
        if spec.partitions_def is not None:
            for key in spec.partitions_def.get_partition_keys(dynamic_partitions_store=instance):
                keys.setdefault(key)
    return list(keys)


def latest_organization_run(
    instance: dg.DagsterInstance,
    organization: str,
    assets: frozenset[dg.AssetKey],
    jobs: frozenset[str],
) -> OrganizationRun:
    """The organization's latest run: the newest run its own step tagged with it
    (``finance/organization``), or launched for its partition (``dagster/partition``) of
    one of ``jobs`` or ``assets``, which also finds a run that failed before tagging."""
    tagged = instance.get_run_records(dg.RunsFilter(tags={ORGANIZATION_TAG: organization}), limit=1)
    launched = [
        r
        for r in instance.get_run_records(
            dg.RunsFilter(tags={PARTITION_TAG: organization}), limit=HISTORY_PAGE
        )
        if r.dagster_run.job_name in jobs or (r.dagster_run.asset_selection or set()) & assets
    ][:1]
    records = [*tagged, *launched]
    if not records:
        return OrganizationRun(organization)
    record = max(records, key=lambda r: r.create_timestamp)
    run = record.dagster_run
    at = record.end_time or record.start_time or record.create_timestamp.timestamp()
    reason = None
    if run.status == dg.DagsterRunStatus.FAILURE:
        failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        reason = describe_failed_run(
            instance, run, failures[-1].dagster_event if failures else None
        ).reason
    return OrganizationRun(
        organization, run.status.value, run.run_id, run.job_name, _utc(at), reason
    )


def _organization_jobs(defs: dg.Definitions, assets: frozenset[dg.AssetKey]) -> frozenset[str]:
    """The definitions' jobs that materialize one of ``assets``."""
    return frozenset(
        job.name
        for job in defs.resolve_all_job_defs()
        if job.asset_layer.selected_asset_keys & assets
    )


# ---------- building the report ----------
def freshness(
    policy: dg.FreshnessPolicy | None, materialized_at: datetime | None, now: datetime
) -> Freshness:
    """fresh, warn (older than the warn window) or fail (older than the fail window).

    Only time-window policies are read; the report says so for any other kind rather
    than guess.
    """
    if policy is None:
        return Freshness(NO_POLICY)
    fail_window = getattr(policy, "fail_window", None)
    if fail_window is None:
        return Freshness(f"{type(policy).__name__}: not read by this report")
    warn = getattr(policy, "warn_window", None)
    windows = {
        "fail_window": fail_window.to_timedelta(),
        "warn_window": warn.to_timedelta() if warn is not None else None,
    }
    if materialized_at is None:
        return Freshness(NEVER_MATERIALIZED, **windows)
    age = now - materialized_at
    if age > windows["fail_window"]:
        state = FAIL
    elif windows["warn_window"] is not None and age > windows["warn_window"]:
        state = WARN
    else:
        state = FRESH
    return Freshness(state, age=age, **windows)


def plain_metadata(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, Any]:
    """Metadata values as JSON values; markdown summaries are left out (the findings say it)."""
    out: dict[str, Any] = {}
    for name, value in metadata.items():
        if isinstance(value, dg.MarkdownMetadataValue):
            continue
        raw = value.value
        json_able = raw is None or isinstance(raw, str | int | float | bool | list | dict)
        out[name] = raw if json_able else str(raw)
    return out


def findings(check: str, metadata: Mapping[str, Any], primary_key: str = "id") -> list[Finding]:
    """What a failed check's metadata names, per ``checks/results.py``; ``primary_key`` is
    the asset's key column (child tables are keyed by parent id and position)."""
    if metadata.get("table_exists") is False:
        return [Finding(metadata.get("table"), None, "table missing")]
    if check == NULLABILITY:
        return [
            Finding(
                f.get("table"),
                f.get("column"),
                f.get("problem", "NULL(s)"),
                f.get("null_count"),
                _ids(f.get("sample_ids") or f.get("sample_parent_rows") or []),
            )
            for f in metadata.get("failures", [])
        ]
    if check == PRIMARY_KEY:
        return _key_findings(metadata.get("tables", []), primary_key)
    if check == QUARANTINE and metadata.get("quarantined"):
        return [
            Finding(
                metadata.get("table"),
                None,
                "quarantined record(s)",
                metadata["quarantined"],
                _ids(metadata.get("sample_ids", [])),
            )
        ]
    return []


def _key_findings(tables: Sequence[Mapping[str, Any]], primary_key: str) -> list[Finding]:
    out = []
    for position, stats in enumerate(tables):
        table = stats.get("table")
        key = primary_key if position == 0 else f"{PARENT_ID_COLUMN}, {POSITION_COLUMN}"
        if stats.get("problem"):
            out.append(Finding(table, None, stats["problem"]))
            continue
        if stats.get("null_keys"):
            out.append(Finding(table, key, "NULL key(s)", stats["null_keys"]))
        if stats.get("duplicate_keys"):
            samples = _ids(stats.get("sample_duplicates", []))
            out.append(Finding(table, key, "duplicate key(s)", stats["duplicate_keys"], samples))
        if stats.get("orphan_rows"):
            samples = _ids(stats.get("sample_orphans", []))
            out.append(
                Finding(table, PARENT_ID_COLUMN, "orphan row(s)", stats["orphan_rows"], samples)
            )
    return out


def _ids(samples: Iterable[Any]) -> tuple[str, ...]:
    """A parent row's id, or a child row's ``parent_id#position``, as the checks' summary."""
    return tuple(
        f"{s.get(PARENT_ID_COLUMN)}#{s.get(POSITION_COLUMN)}" if isinstance(s, dict) else str(s)
        for s in samples
    )


def check_status(
    spec: dg.AssetCheckSpec, entry: dg.EventLogEntry | None, primary_key: str = "id"
) -> CheckStatus:
    evaluation = entry.asset_check_evaluation if entry is not None else None
    if entry is None or evaluation is None:
        return CheckStatus(spec.name)
    metadata = plain_metadata(evaluation.metadata)
    return CheckStatus(
        name=spec.name,
        passed=evaluation.passed,
        severity=evaluation.severity.value,
        description=evaluation.description,
        evaluated_at=_utc(entry.timestamp),
        run_id=entry.run_id,
        metadata=metadata,
        findings=() if evaluation.passed else tuple(findings(spec.name, metadata, primary_key)),
    )


def asset_status(
    spec: dg.AssetSpec,
    materialization: dg.EventLogEntry | None,
    checks: Sequence[CheckStatus],
    now: datetime,
    organization: str | None = None,
) -> AssetStatus:
    event = materialization.asset_materialization if materialization is not None else None
    if materialization is None or event is None:
        return AssetStatus(
            spec.key.to_user_string(),
            freshness(spec.freshness_policy, None, now),
            tuple(checks),
            organization=organization,
        )
    metadata = plain_metadata(event.metadata)
    at = _utc(materialization.timestamp)
    return AssetStatus(
        key=spec.key.to_user_string(),
        freshness=freshness(spec.freshness_policy, at, now),
        checks=tuple(checks),
        materialized_at=at,
        run_id=materialization.run_id,
        rows=metadata.get(ROW_COUNT),
        mode=metadata.get("mode"),
        source=metadata.get("source"),
        organization=organization,
    )


def build_report(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    where: str = "",
    now: datetime | None = None,
) -> Report:
    """The report of ``defs``' assets from what ``instance`` recorded: per asset or, for
    an asset partitioned by organization, per (asset, organization), with each
    organization's latest run."""
    now = now or datetime.now(timezone.utc)
    listed = project_assets(defs)
    run_organization = _run_organizations(instance)
    assets = []
    for spec, check_specs in listed:
        key_column = spec.metadata.get("primary_key", "id")  # as ``assets.py`` declares it
        primary_key = str(getattr(key_column, "value", key_column))
        partitions: list[str | None] = [None]
        by_runs: dict[dg.AssetCheckKey, dict[str, dg.EventLogEntry]] = {}
        if spec.partitions_def is not None:
            partitions = list(organization_keys(instance, [spec]))
            by_runs = {
                c.key: latest_evaluations_by_run_organization(
                    instance, c.key, partitions, run_organization
                )
                for c in check_specs
                if c.partitions_def is None
            }
        for partition in partitions:
            checks = [
                check_status(
                    c,
                    by_runs[c.key].get(partition)
                    if c.key in by_runs
                    else latest_check_evaluation(instance, c.key, partition),
                    primary_key,
                )
                for c in check_specs
            ]
            materialization = latest_materialization(instance, spec.key, partition)
            assets.append(asset_status(spec, materialization, checks, now, partition))
    partitioned = frozenset(s.key for s, _ in listed if s.partitions_def is not None)
    organizations = organization_keys(instance, (s for s, _ in listed))
    jobs = _organization_jobs(defs, partitioned) if organizations else frozenset()
    runs = tuple(latest_organization_run(instance, o, partitioned, jobs) for o in organizations)
    return Report(where, now, tuple(assets), runs)


# ---------- rendering ----------
def render_plain(report: Report) -> str:
    """Two aligned tables (assets, then checks with what each failure names) and a verdict;
    with organizations, an organization column and a third table of their latest runs."""
    lines = [f"Dagster instance {report.instance}, at {_when(report.generated_at)}", ""]
    lines += _aligned(_asset_header(report), [_asset_row(report, a) for a in report.assets])
    lines.append("")
    rows = [
        [*_asset_cells(report, a), c.name, c.result, c.severity or "", c.description or ""]
        for a in report.assets
        for c in a.checks
    ]
    checks = [c for a in report.assets for c in a.checks]
    table = _aligned(_check_header(report), rows)
    lines.append(table[0])
    for line, check in zip(table[1:], checks, strict=True):
        lines.append(line)
        lines += [f"    - {f.text()}" for f in check.findings]
    if report.organizations:
        lines.append("")
        lines += _aligned(_RUN_HEADER, [_run_row(o) for o in report.organizations])
    lines += ["", _verdict(report)]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """The same tables in Markdown, with each failure's findings listed below them."""
    lines = [f"# Asset report: {report.instance}", "", f"At {_when(report.generated_at)}.", ""]
    lines += _markdown_table(
        _asset_header(report), [_asset_row(report, a) for a in report.assets]
    )
    lines += ["", "## Checks", ""]
    lines += _markdown_table(
        _check_header(report),
        [
            [
                *_asset_cells(report, a),
                c.name,
                f"**{c.result}**" if c.passed is False else c.result,
                c.severity or "",
                c.description or "",
            ]
            for a in report.assets
            for c in a.checks
        ],
    )
    if report.organizations:
        lines += ["", "## Organizations", ""]
        lines += _markdown_table(
            _RUN_HEADER,
            [
                [*row[:3], f"**{row[3]}**" if o.failed else row[3], *row[4:]]
                for o, row in ((o, _run_row(o)) for o in report.organizations)
            ],
        )
    failed = [(a, c) for a in report.assets for c in a.checks if c.passed is False]
    if failed or report.failed_organizations:
        lines += ["", "## Failures", ""]
        for run in report.failed_organizations:
            lines.append(
                f"- **{run.organization}**: latest run `{run.run_id}` "
                f"({run.job}) failed: {_md_escape(run.reason or '')}"
            )
        for asset, check in failed:
            lines.append(f"- **{asset.label}** `{check.name}` ({check.severity})")
            lines += [f"  - {_md_escape(f.text())}" for f in check.findings]
    lines += ["", _verdict(report)]
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """The report as one JSON document: times in ISO 8601 (UTC), windows and ages in seconds."""
    return json.dumps(to_json(report), indent=2) + "\n"


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON values; with organizations, each asset names its
    ``organization``, failing checks are named ``asset[organization]:check``, and
    ``failing_organizations`` and ``organizations`` (their latest runs) are added."""
    document: dict[str, Any] = {
        "instance": report.instance,
        "generated_at": _iso(report.generated_at),
        "exit_code": report.exit_code,
        "failing_error_checks": [f"{a.label}:{c.name}" for a, c in report.failing],
    }
    if report.organizations:
        document["failing_organizations"] = [o.organization for o in report.failed_organizations]
    document["assets"] = [_asset_json(report, a) for a in report.assets]
    if report.organizations:
        document["organizations"] = [
            {
                "key": o.organization,
                "failed": o.failed,
                "status": o.status,
                "run_id": o.run_id,
                "job": o.job,
                "at": _iso(o.at),
                "reason": o.reason,
            }
            for o in report.organizations
        ]
    return document


def _asset_json(report: Report, a: AssetStatus) -> dict[str, Any]:
    named = {"organization": a.organization} if report.organizations else {}
    return {
        "key": a.key,
        **named,
        "materialized_at": _iso(a.materialized_at),
        "run_id": a.run_id,
        "rows": a.rows,
        "mode": a.mode,
        "source": a.source,
        "freshness": {
            "state": a.freshness.state,
            "age_seconds": _seconds(a.freshness.age),
            "warn_window_seconds": _seconds(a.freshness.warn_window),
            "fail_window_seconds": _seconds(a.freshness.fail_window),
        },
        "checks": [
            {
                "name": c.name,
                "passed": c.passed,
                "severity": c.severity,
                "description": c.description,
                "evaluated_at": _iso(c.evaluated_at),
                "run_id": c.run_id,
                "findings": [
                    {
                        "table": f.table,
                        "column": f.column,
                        "problem": f.problem,
                        "count": f.count,
                        "sample_ids": list(f.sample_ids),
                    }
                    for f in c.findings
                ],
                "metadata": dict(c.metadata),
            }
            for c in a.checks
        ],
    }


RENDERERS: dict[str, Callable[[Report], str]] = {
    "plain": render_plain,
    "markdown": render_markdown,
    "json": render_json,
}

_ASSET_HEADER = ["asset", "last materialized", "rows", "mode", "source", "freshness"]
_CHECK_HEADER = ["asset", "check", "result", "severity", "description"]
_RUN_HEADER = ["organization", "latest run", "job", "result", "at", "reason"]
NO_ORGANIZATION = "-"  # an unpartitioned asset's organization cell, beside partitioned ones


def _asset_header(report: Report) -> list[str]:
    return ["asset", "organization", *_ASSET_HEADER[1:]] if report.organizations else _ASSET_HEADER


def _check_header(report: Report) -> list[str]:
    return ["asset", "organization", *_CHECK_HEADER[1:]] if report.organizations else _CHECK_HEADER


def _asset_cells(report: Report, a: AssetStatus) -> list[str]:
    """The asset's key and, with organizations, its organization."""
    if not report.organizations:
        return [a.key]
    return [a.key, a.organization or NO_ORGANIZATION]


def _asset_row(report: Report, a: AssetStatus) -> list[str]:
    if a.materialized_at is None:
        return [*_asset_cells(report, a), NEVER_MATERIALIZED, "", "", "", a.freshness.text()]
    rows = f"{a.rows:,}" if isinstance(a.rows, int) else ""
    when = _when(a.materialized_at)
    cells = [when, rows, a.mode or "", a.source or "", a.freshness.text()]
    return [*_asset_cells(report, a), *cells]


def _run_row(o: OrganizationRun) -> list[str]:
    """An organization's latest run: its id as the UI shortens it, job, result, when, and
    a failure's sentence."""
    run_id = o.run_id[:8] if o.run_id else ""
    at = _when(o.at) if o.at else ""
    return [o.organization, run_id, o.job or "", o.result, at, o.reason or ""]


def _verdict(report: Report) -> str:
    failing, failed = report.failing, report.failed_organizations
    if not failing and not failed:
        runs = ", no organization's latest run failed" if report.organizations else ""
        return f"No ERROR check failed{runs} (exit {report.exit_code})."
    what = []
    if failing:
        what.append(f"{len(failing)} ERROR check(s) failed")
    if failed:
        what.append(f"the latest run of {len(failed)} organization(s) failed")
    names = [f"{a.label} {c.name}" for a, c in failing] + [o.organization for o in failed]
    said = " and ".join(what)
    return f"{said[0].upper()}{said[1:]} (exit {report.exit_code}): {', '.join(names)}."


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, ``rows`` right-aligned; the last column is not padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            if i == len(cells) - 1:
                out.append(cell)
            else:
                out.append(cell.rjust(width) if header[i] == "rows" else cell.ljust(width))
        return "  ".join(out).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def _when(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _seconds(span: timedelta | None) -> float | None:
    return span.total_seconds() if span is not None else None


def _hours(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:.0f}h" if hours >= 1 else f"{span.total_seconds() / 60:.0f}min"


# ---------- the command ----------
def instance_problem(home: str | None) -> str | None:
    """Why ``DAGSTER_HOME`` names no instance to read, in one sentence; None if it does."""
    if not home:
        return (
            "DAGSTER_HOME is not set: point it at the Dagster instance to report on "
            "(make report uses dagster_home/ in the project)."
        )
    path = Path(home).expanduser()
    if not path.is_absolute():
        return f"DAGSTER_HOME={home} is not an absolute path; Dagster needs one."
    if not path.is_dir():
        return f"DAGSTER_HOME={home} is not a directory, so there is no instance to report on."
    return None


def print_report(fmt: str = "plain", defs: dg.Definitions | None = None, out: Any = None) -> int:
    """Print the report of the instance at ``DAGSTER_HOME`` in ``fmt``; return the exit code.

    ``defs`` defaults to the project's definitions (what ``dg`` and the UI load).
    """
    out = out or sys.stdout
    home = os.getenv("DAGSTER_HOME")
    problem = instance_problem(home)
    if problem:
        print(problem, file=out)
        return EXIT_NOTHING_TO_REPORT
    with dg.DagsterInstance.get() as instance:
        report = build_report(instance, defs or project_defs(), where=str(home))
    if report.empty:
        print(
            f"The Dagster instance at {home} holds no materialization or check result of "
            "this project's assets yet: run a job (make demo) first.",
            file=out,
        )
        return EXIT_NOTHING_TO_REPORT
    out.write(RENDERERS[fmt](report))
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finance_assets.report",
        description="The latest materialization and check results of every asset, read from "
        "the Dagster instance at DAGSTER_HOME. Exit 1 when an ERROR check's latest result "
        "failed, 2 when there is nothing to report, else 0.",
    )
    parser.add_argument("--format", choices=FORMATS, default="plain")
    return print_report(parser.parse_args(argv).format)


if __name__ == "__main__":
    raise SystemExit(main())
