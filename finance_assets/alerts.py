"""Failure alerts: tell people a run of the ingestion failed.

A run-failure sensor logs every failed run of an ingestion's jobs, and of ad-hoc
materializations of its assets, with the run's one-line reason; when
``FINANCE_ALERT_WEBHOOK_URL`` is set it also POSTs the message to that webhook as a
Slack incoming webhook takes it (``{"text": ...}``). The message is built from the job,
run and asset names and the failure's headline only, never from run config, resource
config or environment values; the webhook URL is itself a secret and is never logged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import dagster as dg
import httpx

from finance_assets.api.client import LOOPBACK_HOSTS
from finance_assets.api.transport import network_transport

WEBHOOK_ENV = "FINANCE_ALERT_WEBHOOK_URL"
MAX_REASON_CHARS = 2000  # a reason longer than this is cut; the run's page has it whole
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class NamedJob(Protocol):
    """A job as ``dg.define_asset_job`` or ``@dg.job`` makes it; the sensor needs its name."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class WebhookPolicy:
    """How hard to try the webhook. The whole post, retries included, stays within
    ``max_elapsed_seconds``, so a sensor tick that alerts on several runs ends well inside
    Dagster's sensor timeout even when the webhook hangs."""

    timeout_seconds: float = 5.0  # each attempt: connect, send, each read
    max_attempts: int = 3
    backoff_seconds: float = 0.5  # doubled after each failed attempt
    max_elapsed_seconds: float = 10.0


@dataclass(frozen=True)
class FailedRun:
    """What an alert says about one failed run: names and the failure's headline only."""

    job: str
    run_id: str
    assets: tuple[str, ...]  # the assets that did not materialize (see ``assets_label``)
    assets_label: str
    reason: str
    planned_assets: frozenset[dg.AssetKey]  # all the run was to materialize

    @property
    def job_title(self) -> str:
        """The job, saying so when it is Dagster's implicit job of a UI materialization."""
        if self.job.startswith("__"):
            return f"ad-hoc materialization ({self.job})"
        return self.job

    def log_line(self) -> str:
        assets = ", ".join(self.assets) or "none"
        return (
            f"Run {self.run_id} of {self.job_title} failed ({self.assets_label}: {assets}): "
            f"{self.reason}"
        )

    def text(self) -> str:
        """The message, in Slack's markup: names in code spans, ``&<>`` escaped so that no
        text from a failure can mention a channel or make a link."""
        assets = ", ".join(f"`{a}`" for a in self.assets) or "none"
        return "\n".join(
            (
                f"Dagster run failed: {_slack_escape(self.job_title)}",
                f"Run: `{self.run_id}`",
                f"{self.assets_label}: {_slack_escape(assets)}",
                f"Reason: {_slack_escape(self.reason)}",
            )
        )


def alert_body(failed: FailedRun) -> dict[str, str]:
    """The JSON body a Slack incoming webhook accepts, and nothing else."""
    return {"text": failed.text()}


def describe_failed_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, failure_event: dg.DagsterEvent | None = None
) -> FailedRun:
    """The failed run as an alert tells it, read from the run's event log."""
    planned: dict[dg.AssetKey, str | None] = {}  # asset -> the step that was to materialize it
    materialized: set[dg.AssetKey] = set()
    step_failures: list[dg.DagsterEvent] = []
    kinds = {
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.STEP_FAILURE,
    }
    for entry in instance.all_logs(run.run_id, of_type=kinds):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            step_failures.append(event)
        elif event.asset_key is not None:
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                materialized.add(event.asset_key)
            else:
                planned.setdefault(event.asset_key, event.step_key)
    missing = set(planned) - materialized
    label = f"Assets not materialized ({len(missing)} of {len(planned)})"
    if not missing:  # everything landed, yet a step failed: name what that step was for
        failed_steps = {e.step_key for e in step_failures}
        missing = {key for key, step in planned.items() if step in failed_steps}
        label = "Assets of the failed step (all materialized)"
    if step_failures:
        reason = _step_reason(step_failures[0])
        if len(step_failures) > 1:
            reason += f" (and {len(step_failures) - 1} more failed steps)"
    else:  # the run failed outside any step (launch, a lost run worker): Dagster's sentence
        reason = _first_line(failure_event.message if failure_event else None)
    return FailedRun(
        job=run.job_name,
        run_id=run.run_id,
        assets=tuple(sorted(k.to_user_string() for k in missing)),
        assets_label=label,
        reason=_shorten(reason or "no reason was recorded; see the run's page"),
        planned_assets=frozenset(planned),
    )


def _step_reason(event: dg.DagsterEvent) -> str:
    """The step failure's headline: the ``dg.Failure``'s description (every failure of
    the project is one), else the innermost error's first line, which is the user's
    exception under Dagster's wrappers. Never the stack."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return _first_line(data.user_failure_data.description)
    error = data.error
    if error is None:
        return _first_line(event.message)
    while error.cause is not None:
        error = error.cause
    message = _first_line(error.message)
    qualified, sep, rest = message.partition(": ")
    if sep and qualified.endswith(error.cls_name):  # "pkg.mod.SomeError: text" -> short class
        message = f"{error.cls_name}: {rest}"
    return message


def _first_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def _shorten(text: str) -> str:
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 1].rstrip() + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_url_problem(url: str) -> str | None:
    """Why the URL cannot be posted to, in a sentence that does not repeat it; None if fine.
    Plain http is refused except on loopback, as for the API: the URL is a credential."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{WEBHOOK_ENV} is not an http(s) URL, so the alert was not sent."
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        return f"{WEBHOOK_ENV} uses plain http off loopback, so the alert was not sent; use https."
    return None


def post_alert(
    url: str,
    body: Mapping[str, str],
    log: logging.Logger,
    policy: WebhookPolicy = WebhookPolicy(),  # noqa: B008 - frozen
) -> bool:
    """POST ``body`` as JSON to the webhook; True once it answered 2xx.

    Retries network errors, timeouts, 429 and 5xx with doubling waits, within the
    policy's bounds; any other answer is final. Never raises: a failure to alert is
    logged as one sentence that names neither the URL nor the response body. The
    request goes through the transport directly, not an ``httpx.Client``, because the
    client logs every request's full URL, and this URL is the secret.
    """
    try:
        return _post(url, body, log, policy)
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the sensor
        log.warning(
            f"the alert webhook could not be posted to ({type(exc).__name__}), so the "
            "failure above was not sent."
        )
        return False


def _post(url: str, body: Mapping[str, str], log: logging.Logger, policy: WebhookPolicy) -> bool:
    problem = webhook_url_problem(url)
    if problem:
        log.error(problem)
        return False
    content = json.dumps(body).encode()
    started = time.monotonic()
    with network_transport(url, httpx.Limits(max_connections=1)) as transport:
        attempt = 0
        while True:
            attempt += 1
            remaining = policy.max_elapsed_seconds - (time.monotonic() - started)
            timeout = max(0.05, min(policy.timeout_seconds, remaining))
            status, retry_after, problem = _attempt(transport, url, content, timeout)
            if status is not None and 200 <= status < 300:
                return True
            if status is not None and status not in RETRY_STATUSES:
                log.warning(
                    f"the alert webhook refused the message (HTTP {status}), so the failure "
                    f"above was not sent; check {WEBHOOK_ENV}."
                )
                return False
            wait = policy.backoff_seconds * 2 ** (attempt - 1)
            if retry_after is not None:
                wait = max(wait, retry_after)
            elapsed = time.monotonic() - started
            if attempt >= policy.max_attempts or elapsed + wait >= policy.max_elapsed_seconds:
                attempts = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                log.warning(
                    f"the alert webhook was unreachable or failing after {attempts} in "
                    f"{elapsed:.1f}s (last: {problem}), so the failure above was not sent."
                )
                return False
            time.sleep(wait)


def _attempt(
    transport: httpx.BaseTransport, url: str, content: bytes, timeout: float
) -> tuple[int | None, float | None, str]:
    """One POST: (status, Retry-After seconds, what went wrong)."""
    request = httpx.Request(
        "POST",
        url,
        content=content,
        headers={"Content-Type": "application/json"},
        extensions={"timeout": httpx.Timeout(timeout).as_dict()},
    )
    try:
        response = transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        return None, None, f"timed out ({type(exc).__name__})"
    except httpx.TransportError as exc:
        return None, None, f"connection failed ({type(exc).__name__})"
    status = response.status_code
    retry_after = None
    if status == 429:
        try:
            retry_after = max(0.0, float(response.headers.get("Retry-After", "")))
        except ValueError:
            retry_after = None
    return status, retry_after, f"HTTP {status}"


def _assets_of(
    repository: dg.RepositoryDefinition | None, job_names: frozenset[str]
) -> set[dg.AssetKey]:
    """The assets the jobs materialize, as the code location resolves them (none without
    one, as in a bare call of the sensor: then only the jobs' own runs are recognized)."""
    keys: set[dg.AssetKey] = set()
    if repository is None:
        return keys
    for name in job_names:
        if repository.has_job(name):
            keys |= repository.get_job(name).asset_layer.selected_asset_keys
    return keys


def _touches(
    run: dg.DagsterRun,
    failed: FailedRun,
    repository: dg.RepositoryDefinition | None,
    job_names: frozenset[str],
) -> bool:
    """Whether a run of another job was to materialize or check one of the jobs' assets."""
    keys = _assets_of(repository, job_names)
    checked = {check.asset_key for check in run.asset_check_selection or ()}
    return bool(keys & (failed.planned_assets | checked))


def build_failure_alert_sensor(
    name: str,
    jobs: Sequence[NamedJob],
    *,
    policy: WebhookPolicy = WebhookPolicy(),  # noqa: B008 - frozen
) -> dg.SensorDefinition:
    """A run-failure sensor, running by default, for ``jobs`` and their assets.

    It watches every run of its own code location (``monitored_jobs=None``; never other
    code locations) and alerts on the failed runs that are this ingestion's: runs of
    ``jobs``, and runs of any other job, such as the implicit job of a *Materialize* in
    the UI, that were to materialize one of the jobs' assets. A second ingestion in the
    same code location has its own sensor, so each failure is told once. Every such run
    is logged with its reason; it is posted to ``FINANCE_ALERT_WEBHOOK_URL`` (read at
    each evaluation) when that is set. Dagster's run-status cursor hands each failed run
    to the sensor once. Runs executed in a CLI's own process (``dg launch``) belong to no
    code location, and Dagster hands them to no code location's sensor.
    """
    job_names = frozenset(job.name for job in jobs)
    listed = ", ".join(sorted(job_names))

    @dg.run_failure_sensor(
        name=name,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Logs every failed run of {listed} and of ad-hoc materializations of "
        f"their assets, with its reason; posts it to the webhook {WEBHOOK_ENV} names, if set.",
    )
    def failure_alert(context: dg.RunFailureSensorContext) -> list[dg.RunRequest] | None:
        run = context.dagster_run
        failed = describe_failed_run(context.instance, run, context.failure_event)
        ours = run.job_name in job_names or _touches(run, failed, context.repository_def, job_names)
        if not ours:
            # Nothing to do. An empty result ends this tick (the next goes on after this
            # run): None would record in that run that this sensor acted on it, and Dagster
            # refuses a SkipReason beside other runs' results in the same tick.
            return []
        context.log.error(failed.log_line())
        url = os.environ.get(WEBHOOK_ENV, "").strip()
        if url:
            post_alert(url, alert_body(failed), context.log, policy)
        return None

    return failure_alert
