"""Failure alerts, with real parts only: real failed runs of the shipped job in a real
Dagster instance, the run-failure sensor evaluated as the daemon evaluates it (a tick
with a cursor), and a local HTTP server on a free loopback port standing in for Slack.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from finance_assets.alerts import WEBHOOK_ENV, WebhookPolicy, build_failure_alert_sensor
from finance_assets.assets import DEFAULT_NAMES, IngestionNames
from finance_assets.sandbox import Sandbox
from finance_assets_tests.harness import SCALE, api_for, run, shipped_definitions

SENSOR = DEFAULT_NAMES.failure_sensor
JOB = DEFAULT_NAMES.incremental_job
SECRET = "sentinel-client-secret-alerts-41d7"
REFRESH = "1000.sentinel-refresh-token-alerts-8a3f"
WRONG_REFRESH = "1000.sentinel-wrong-refresh-token-alerts-c05e"
WEBHOOK_TOKEN = "sentinel-webhook-token-e92b"  # the secret part of a Slack webhook URL
WEBHOOK_PATH = f"/services/T0ALERTS/B0ALERTS/{WEBHOOK_TOKEN}"
# Retries that cost milliseconds; a hanging webhook is given up on within a second.
FAST = WebhookPolicy(
    timeout_seconds=0.3, max_attempts=3, backoff_seconds=0.01, max_elapsed_seconds=3.0
)
PARTIAL_SENTENCE = "FINANCE_API_TOKEN_URL is: set all five for the real API, or none"


@dataclass
class Received:
    path: str
    content_type: str
    body: bytes


class Receiver:
    """A webhook on a free loopback port: records every POST and answers each with the
    next of ``statuses`` (then 200); with ``hang`` it answers nothing until closed."""

    def __init__(self, statuses: tuple[int, ...] = (), hang: bool = False) -> None:
        self.received: list[Received] = []
        self.statuses = list(statuses)
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                receiver.received.append(
                    Received(self.path, self.headers.get("Content-Type", ""),
                             self.rfile.read(length))
                )  # fmt: skip
                if hang:
                    receiver.released.wait(10)
                    return
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # its request lines hold the URL, the secret

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}{WEBHOOK_PATH}"

    def bodies(self) -> list[dict]:
        return [json.loads(r.body) for r in self.received]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{WEBHOOK_PATH}"


def set_finance_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Exactly these ``FINANCE_*`` variables, whatever the shell has."""
    for name in list(os.environ):
        if name.startswith("FINANCE_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    cursor: str | None,
):
    """One evaluation as the daemon makes it; the first (no cursor) starts past every
    failure already recorded, as a sensor does when it is turned on."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor.evaluate_tick(context)


def run_shipped_job(defs: dg.Definitions, instance: dg.DagsterInstance):
    """A real run of the shipped ``finance_daily``; never raises on failure."""
    return defs.resolve_job_def(JOB).execute_in_process(instance=instance, raise_on_error=False)


@dataclass
class FailedShippedRun:
    instance: dg.DagsterInstance
    defs: dg.Definitions
    cursor: str  # the sensor's cursor from before the run
    run_id: str


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory) -> Iterator[FailedShippedRun]:
    """One run of the shipped ``finance_daily`` that fails at once: the environment sets
    the token URL but none of the other four variables (nothing is sent or written)."""
    database = tmp_path_factory.mktemp("partial") / "w.duckdb"
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test() as instance:
        set_finance_env(
            mp,
            FINANCE_API_TOKEN_URL="https://auth.example.com/oauth/v2/token",
            FINANCE_DUCKDB_PATH=str(database),
        )
        defs = shipped_definitions()
        cursor = tick(defs.resolve_sensor_def(SENSOR), instance, defs, None).cursor
        result = run_shipped_job(defs, instance)
        assert not result.success
        yield FailedShippedRun(instance, defs, cursor, result.run_id)


def fast_sensor(defs: dg.Definitions) -> dg.SensorDefinition:
    """The shipped sensor's twin, over the shipped jobs, with millisecond retries."""
    jobs = [defs.resolve_job_def(JOB), defs.resolve_job_def(DEFAULT_NAMES.full_refresh_job)]
    return build_failure_alert_sensor("alerts_under_test", jobs, policy=FAST)


def test_the_shipped_definitions_run_the_sensor_by_default(monkeypatch) -> None:
    set_finance_env(monkeypatch)
    sensor = shipped_definitions().resolve_sensor_def(SENSOR)
    assert sensor.name == "finance_run_failure_sensor"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert isinstance(sensor, dg.RunStatusSensorDefinition)
    assert IngestionNames.for_instance("eu_books").failure_sensor == "eu_books_run_failure_sensor"


def test_a_failed_run_is_posted_exactly_once_with_no_secret(
    make_sandbox, receiver: Receiver, tmp_path: Path, monkeypatch, capfd, caplog
) -> None:
    """The issue's done-when: a real API configuration whose refresh token is refused."""
    caplog.set_level(logging.DEBUG)
    sb: Sandbox = make_sandbox(scale=SCALE, client_secret=SECRET, refresh_token=REFRESH)
    set_finance_env(
        monkeypatch,
        FINANCE_API_BASE_URL=sb.base_url,
        FINANCE_API_TOKEN_URL=sb.token_url,
        FINANCE_API_CLIENT_ID=sb.client_id,
        FINANCE_API_CLIENT_SECRET=SECRET,
        FINANCE_API_REFRESH_TOKEN=WRONG_REFRESH,
        FINANCE_DUCKDB_PATH=str(tmp_path / "w.duckdb"),
        FINANCE_ALERT_WEBHOOK_URL=receiver.url,
    )
    defs = shipped_definitions()
    sensor = defs.resolve_sensor_def(SENSOR)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, defs, None).cursor
        assert receiver.received == []
        result = run_shipped_job(defs, instance)
        assert not result.success
        first = tick(sensor, instance, defs, cursor)
        again = tick(sensor, instance, defs, first.cursor)
        once_more = tick(sensor, instance, defs, again.cursor)

    assert [r.dagster_run.run_id for r in first.dagster_run_reactions] == [result.run_id]
    assert again.dagster_run_reactions == [] and once_more.dagster_run_reactions == []
    assert len(receiver.received) == 1  # exactly once, however often the sensor runs
    request = receiver.received[0]
    assert request.content_type == "application/json"
    assert request.path == WEBHOOK_PATH
    body = receiver.bodies()[0]
    assert list(body) == ["text"]
    text = body["text"]
    assert "Dagster run failed: finance_daily" in text
    assert f"Run: `{result.run_id}`" in text
    assert "Assets not materialized (16 of 16): `banking`, `bills`," in text
    assert "`customer_payments`" in text and "`users`" in text
    assert (
        "Reason: the token endpoint refused the refresh token (invalid_grant): it is wrong, "
        "expired or revoked; issue a new one and set FINANCE_API_REFRESH_TOKEN." in text
    )
    assert "Traceback" not in text and 'File "' not in text  # no stack
    captured = capfd.readouterr()
    logs = captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)
    assert f"Run {result.run_id} of finance_daily failed" in logs  # logged as well as posted
    secrets = [SECRET, REFRESH, WRONG_REFRESH, WEBHOOK_TOKEN, *sb.issued_tokens()]
    assert [s for s in secrets if s in request.body.decode()] == []
    assert [s for s in secrets if s in logs] == []  # the webhook URL is never logged either


def test_without_a_webhook_every_failure_is_logged_and_nothing_posted(
    failed_run: FailedShippedRun, receiver: Receiver, monkeypatch, capfd
) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    f = failed_run
    data = tick(f.defs.resolve_sensor_def(SENSOR), f.instance, f.defs, f.cursor)
    assert [r.dagster_run.run_id for r in data.dagster_run_reactions] == [f.run_id]
    err = capfd.readouterr().err
    line = next(x for x in err.splitlines() if f"Run {f.run_id} of finance_daily failed" in x)
    assert "ERROR" in line
    assert "Assets not materialized (16 of 16): banking, bills," in line
    assert PARTIAL_SENTENCE in line
    assert receiver.received == []


@pytest.mark.parametrize("statuses", [(500,), (503, 429)], ids=["500", "503-429"])
def test_5xx_and_429_are_retried_and_posted_once(
    failed_run: FailedShippedRun, monkeypatch, capfd, statuses: tuple[int, ...]
) -> None:
    f = failed_run
    receiver = Receiver(statuses)
    try:
        monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
        tick(fast_sensor(f.defs), f.instance, f.defs, f.cursor)
    finally:
        receiver.close()
    bodies = receiver.bodies()
    assert len(bodies) == len(statuses) + 1  # the refused attempts, then the one delivered
    assert all(b == bodies[0] for b in bodies)
    assert f.run_id in bodies[0]["text"] and PARTIAL_SENTENCE in bodies[0]["text"]
    assert "alert webhook" not in capfd.readouterr().err  # delivered: no warning


def test_another_4xx_is_not_retried(failed_run: FailedShippedRun, monkeypatch, capfd) -> None:
    f = failed_run
    receiver = Receiver((404,))
    try:
        monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
        tick(fast_sensor(f.defs), f.instance, f.defs, f.cursor)
    finally:
        receiver.close()
    assert len(receiver.received) == 1
    err = capfd.readouterr().err
    assert "the alert webhook refused the message (HTTP 404)" in err
    assert WEBHOOK_TOKEN not in err


def test_a_webhook_that_is_down_is_logged_not_raised(
    failed_run: FailedShippedRun, monkeypatch, capfd, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    f = failed_run
    url = closed_port_url()
    monkeypatch.setenv(WEBHOOK_ENV, url)
    sensor = fast_sensor(f.defs)
    data = tick(sensor, f.instance, f.defs, f.cursor)  # returns: the failure is not raised
    assert [r.dagster_run.run_id for r in data.dagster_run_reactions] == [f.run_id]
    assert [r.error for r in data.dagster_run_reactions] == [None]
    assert tick(sensor, f.instance, f.defs, data.cursor).dagster_run_reactions == []
    logs = capfd.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    assert "WARNING" in logs
    assert "the alert webhook was unreachable or failing after 3 attempts" in logs
    assert "connection failed (ConnectError)" in logs
    assert PARTIAL_SENTENCE in logs  # the run's failure itself is still logged
    assert WEBHOOK_TOKEN not in logs and url.split("/services")[0] not in logs


@pytest.mark.parametrize(
    ("url", "sentence"),
    [
        (f"http://hooks.example.com{WEBHOOK_PATH}", "uses plain http off loopback"),
        (f"hooks.example.com{WEBHOOK_PATH}", "is not an http(s) URL"),
    ],
    ids=["plain-http", "no-scheme"],
)
def test_a_webhook_url_that_would_leak_is_refused_unsent(
    failed_run: FailedShippedRun, monkeypatch, capfd, url: str, sentence: str
) -> None:
    """The URL is a credential: plain http is refused off loopback, as for the API."""
    f = failed_run
    monkeypatch.setenv(WEBHOOK_ENV, url)
    data = tick(fast_sensor(f.defs), f.instance, f.defs, f.cursor)
    assert [r.error for r in data.dagster_run_reactions] == [None]
    err = capfd.readouterr().err
    assert f"{WEBHOOK_ENV} {sentence}, so the alert was not sent" in err
    assert WEBHOOK_TOKEN not in err and "hooks.example.com" not in err


def test_a_webhook_that_hangs_times_out_and_is_logged(
    failed_run: FailedShippedRun, monkeypatch, capfd
) -> None:
    f = failed_run
    receiver = Receiver(hang=True)
    policy = WebhookPolicy(
        timeout_seconds=0.2, max_attempts=2, backoff_seconds=0.01, max_elapsed_seconds=3.0
    )
    jobs = [f.defs.resolve_job_def(JOB)]
    sensor = build_failure_alert_sensor("alerts_hanging", jobs, policy=policy)
    try:
        monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
        started = time.monotonic()
        tick(sensor, f.instance, f.defs, f.cursor)
        elapsed = time.monotonic() - started
    finally:
        receiver.close()
    assert len(receiver.received) == 2  # both attempts reached it; neither was answered
    assert elapsed < 2.5  # two 0.2 s timeouts, not a hang
    err = capfd.readouterr().err
    assert "the alert webhook was unreachable or failing after 2 attempts" in err
    assert "timed out (ReadTimeout)" in err


def test_a_successful_run_posts_nothing(
    failed_run: FailedShippedRun, make_sandbox, receiver: Receiver, tmp_path: Path, monkeypatch
) -> None:
    """A materialization that succeeds, in the instance that holds a failed run."""
    f = failed_run
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    sensor = f.defs.resolve_sensor_def(SENSOR)
    cursor = tick(sensor, f.instance, f.defs, None).cursor  # past the earlier failure
    result = run(api_for(make_sandbox(scale=SCALE)), tmp_path / "w.duckdb", ["users"], f.instance)
    assert result.success
    data = tick(sensor, f.instance, f.defs, cursor)
    assert data.dagster_run_reactions == []
    assert receiver.received == []


def test_ad_hoc_materializations_are_alerted_and_other_jobs_are_not(
    make_sandbox, receiver: Receiver, tmp_path: Path, monkeypatch
) -> None:
    """A materialization of some of the assets (the UI's implicit job) in which one lands
    and one fails is alerted naming only the one that failed; a failed run of a job that
    is not the ingestion's, in the same instance, is left alone."""
    sb: Sandbox = make_sandbox(scale=SCALE)
    set_finance_env(monkeypatch, FINANCE_ALERT_WEBHOOK_URL=receiver.url)
    defs = shipped_definitions()
    sensor = defs.resolve_sensor_def(SENSOR)

    @dg.op
    def unrelated_op() -> None:
        raise dg.Failure(description="an unrelated job failed")

    @dg.job
    def unrelated_job() -> None:
        unrelated_op()

    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance, defs, None).cursor
        other = unrelated_job.execute_in_process(instance=instance, raise_on_error=False)
        assert not other.success
        # users (2 records) fits one page of 10; invoices does not: "more pages after 1"
        api = api_for(sb, per_page=10, max_pages=1)
        partial = run(api, tmp_path / "w.duckdb", ["users", "invoices"], instance)
        assert not partial.success
        reactions = []
        for _ in range(3):  # the unrelated run ends the first tick; the next one goes on
            data = tick(sensor, instance, defs, cursor)
            reactions.append([r.dagster_run.run_id for r in data.dagster_run_reactions])
            cursor = data.cursor
    assert reactions == [[], [partial.run_id], []]
    assert len(receiver.received) == 1
    text = receiver.bodies()[0]["text"]
    assert f"Dagster run failed: ad-hoc materialization ({partial.dagster_run.job_name})" in text
    assert "Assets not materialized (1 of 2): `invoices`\n" in text
    assert "Reason: 1 of 2 endpoints failed; their tables are unchanged. invoices:" in text
    assert "more pages after 1" in text
    assert "unrelated" not in text
