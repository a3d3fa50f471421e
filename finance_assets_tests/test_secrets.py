"""No secret is ever visible: not in output, logs, Dagster storage, metadata, errors or DuckDB.

The sandbox is given sentinel credentials and every access token it issues is
captured (``Sandbox.issued_tokens``); succeeding and failing runs, in process and
through the ``dagster`` CLI, are then searched byte for byte.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from finance_assets.api import AuthError, FinanceApiClient
from finance_assets.sandbox import Sandbox
from finance_assets_tests.harness import (
    SCALE,
    api_for,
    cli_env,
    cli_output,
    run,
    shipped_definitions,
    start_cli,
)

SECRET = "sentinel-client-secret-5f1c7a"
REFRESH = "1000.sentinel-refresh-token-9d2e41"
WRONG_REFRESH = "1000.sentinel-wrong-refresh-token-77b0"
SELECTION = ["users", "invoices", "journals"]


def files_under(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def find_leaks(secrets: list[str], places: dict[str, bytes]) -> list[str]:
    """``secret-name in place`` for every secret found anywhere (names only, never values)."""
    leaks = []
    for i, secret in enumerate(secrets):
        needle = secret.encode()
        leaks += [f"secret #{i} in {where}" for where, data in places.items() if needle in data]
    return leaks


@pytest.fixture
def sentinel_sandbox(make_sandbox) -> Sandbox:
    return make_sandbox(scale=SCALE, client_secret=SECRET, refresh_token=REFRESH)


def test_in_process_runs_leak_nothing(sentinel_sandbox, tmp_path, capfd, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    sb = sentinel_sandbox
    database = tmp_path / "w.duckdb"
    home = tmp_path / "home"
    home.mkdir()
    messages: list[str] = []
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        ok = run(api_for(sb), database, SELECTION, instance)
        assert ok.success
        sb.revoke_tokens()  # the next run must mint, then refresh on a 401
        sb.configure(token_max_uses=0)  # every token is refused: "rejected a fresh token"
        fresh_refused = run(api_for(sb), database, SELECTION, instance)
        sb.configure(token_max_uses=None, malformed="error_code")
        bad_answer = run(api_for(sb), database, SELECTION, instance)
        sb.configure(malformed=None)
        refused = run(api_for(sb, refresh_token=WRONG_REFRESH), database, SELECTION, instance)
        results = [ok, fresh_refused, bad_answer, refused]
        assert [r.success for r in results] == [True, False, False, False]
        for result in results[1:]:
            for event in result.get_step_failure_events():
                error = event.step_failure_data.error
                while error is not None:
                    messages.append(error.to_string())
                    error = error.cause
        events = [
            dg.serialize_value(e) for r in instance.get_runs() for e in instance.all_logs(r.run_id)
        ]
        runs = [dg.serialize_value(r) for r in instance.get_runs()]
    assert "FINANCE_API_REFRESH_TOKEN" in " ".join(messages)  # the failures did say why

    tokens = sb.issued_tokens()
    assert len(tokens) >= 2
    captured = capfd.readouterr()
    places = {
        "stdout": captured.out.encode(),
        "stderr": captured.err.encode(),
        "log records": "\n".join(r.getMessage() for r in caplog.records).encode(),
        "event log": "\n".join(events).encode(),
        "run storage": "\n".join(runs).encode(),
        "error messages": "\n".join(messages).encode(),
        "duckdb file": database.read_bytes(),
        **{f"dagster home {p.name}": data for p, data in files_under(home)},
    }
    assert find_leaks([SECRET, REFRESH, WRONG_REFRESH, *tokens], places) == []
    # the search can find: the secret is really in what the sandbox was given
    assert find_leaks([SECRET], {"config": repr(sb.config).encode()}) != []


def test_cli_runs_leak_nothing(sentinel_sandbox, tmp_path) -> None:
    """One CLI run in which some assets land and the later ones fail on a bad answer."""
    sb = sentinel_sandbox
    sb.configure(latency=0.05)
    database, home, work = tmp_path / "w.duckdb", tmp_path / "home", tmp_path / "run"
    proc = start_cli(cli_env(sb, database, home), work)

    def break_midway() -> None:  # after some endpoints landed, answer with an error code
        deadline = time.monotonic() + 120
        while sb.stats()["api_requests"] < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        sb.configure(malformed="error_code", latency=0.0)

    breaker = threading.Thread(target=break_midway, daemon=True)
    breaker.start()
    proc.wait(timeout=120)
    breaker.join(timeout=5)
    output = cli_output(work)
    assert "ASSET_MATERIALIZATION" in output and "STEP_FAILURE" in output
    assert "code 1002" in output
    places = {
        "cli output": output.encode(),
        "duckdb file": database.read_bytes(),
        **{f"dagster home {p.relative_to(home)}": data for p, data in files_under(home)},
    }
    tokens = sb.issued_tokens()
    assert tokens
    assert find_leaks([SECRET, REFRESH, *tokens], places) == []


def test_client_logs_carry_no_secret(sentinel_sandbox, caplog) -> None:
    """httpx logs every request at INFO and httpcore every step at DEBUG; what they log
    (URLs, status lines, response headers) holds no secret, through a read, a refresh on
    a 401 and a refused refresh token."""
    caplog.set_level(logging.DEBUG)
    sb = sentinel_sandbox
    with FinanceApiClient(sb.base_url, sb.token_url, sb.client_id, SECRET, REFRESH) as client:
        list(client.iter_pages("/v1/users", "users"))
        sb.revoke_tokens()
        list(client.iter_pages("/v1/users", "users"))  # a 401, a new token, the page again
    with FinanceApiClient(
        sb.base_url, sb.token_url, sb.client_id, SECRET, WRONG_REFRESH
    ) as client, pytest.raises(AuthError):  # fmt: skip
        client.authenticate()
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    tokens = sb.issued_tokens()
    assert len(tokens) == 2
    assert find_leaks([SECRET, REFRESH, WRONG_REFRESH, *tokens], {"logs": logged.encode()}) == []
    # the search can find: the requests, the 401 and the refusal were all logged
    assert f"httpx INFO HTTP Request: POST {sb.token_url} \"HTTP/1.1 400 Bad Request\"" in logged
    assert '/v1/users?page=1&per_page=200 "HTTP/1.1 401 Unauthorized"' in logged
    assert "httpcore.http11 DEBUG receive_response_headers.complete" in logged


def test_importing_the_client_leaves_logging_alone() -> None:
    """Log levels are the application's to set, not an import's side effect."""
    code = (
        "import logging, finance_assets.api, finance_assets.definitions; "
        "print([logging.getLogger(n).level for n in ('httpx', 'httpcore')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0, 0]"


@pytest.fixture
def env_defs(monkeypatch) -> dg.Definitions:
    """The shipped definitions, loaded with the API configured by env vars."""
    values = {
        "FINANCE_API_BASE_URL": "https://api.example.com",
        "FINANCE_API_TOKEN_URL": "https://auth.example.com/oauth/v2/token",
        "FINANCE_API_CLIENT_ID": "sentinel-client-id",
        "FINANCE_API_CLIENT_SECRET": SECRET,
        "FINANCE_API_REFRESH_TOKEN": REFRESH,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return shipped_definitions()


def test_definitions_hold_env_var_names_not_values(env_defs) -> None:
    resource = env_defs.resources["finance_api"]
    for field, name in [
        ("base_url", "FINANCE_API_BASE_URL"),
        ("token_url", "FINANCE_API_TOKEN_URL"),
        ("client_id", "FINANCE_API_CLIENT_ID"),
        ("client_secret", "FINANCE_API_CLIENT_SECRET"),
        ("refresh_token", "FINANCE_API_REFRESH_TOKEN"),
    ]:
        value = getattr(resource, field)
        assert isinstance(value, dg.EnvVar) and value == name, field  # the UI shows the name
    shown = repr(resource) + repr(env_defs.resources["duckdb"])
    assert find_leaks([SECRET, REFRESH], {"resources": shown.encode()}) == []
