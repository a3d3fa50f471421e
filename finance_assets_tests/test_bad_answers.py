"""Wrong answers fail the asset with one clear sentence and leave every table as it was.

The sandbox gives each wrong answer for real, switched on live (``malformed``,
wrong credentials, a dead port, a wrong base URL) against a warehouse loaded
once beforehand; every byte of every table (data, cursors, quarantine) is
compared before and after.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from finance_assets.sandbox import MALFORMED_KINDS, Sandbox
from finance_assets.warehouse import record_source
from finance_assets_tests.harness import SCALE, all_tables, api_for, failure_message, run

SELECTION = ["invoices", "taxes"]  # a multi-page and a small resource; the others are kept

# Network attempts are seen through a process-wide audit hook; one cannot be removed,
# so it is installed once and switched on by the test that listens.
listening: list[Any] = [None]


def _dispatch(event: str, args: tuple) -> None:
    hook = listening[0]
    if hook is not None:
        hook(event, args)


sys.addaudithook(_dispatch)


@pytest.fixture(scope="module")
def loaded(make_module_sandbox, tmp_path_factory) -> tuple[Sandbox, Path]:
    """A sandbox and a warehouse fully loaded from it."""
    sb = make_module_sandbox(scale=SCALE)
    database = tmp_path_factory.mktemp("bad") / "w.duckdb"
    assert run(api_for(sb), database).success
    return sb, database


@pytest.fixture
def sandbox(loaded) -> Iterator[Sandbox]:
    """The module's sandbox, restored to good behaviour after each test."""
    sb = loaded[0]
    yield sb
    sb.configure(malformed=None)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fails_clearly(api: Any, database: Path, *fragments: str) -> str:
    """Run, expect failure with every fragment in one line, and no table touched."""
    before = all_tables(database)
    result = run(api, database, SELECTION)
    assert not result.success
    assert not result.get_asset_materialization_events()
    message = failure_message(result)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert all_tables(database) == before
    return message


MALFORMED_EXPECTED: dict[str, tuple[str, ...]] = {
    "not_json": ("GET /v1/invoices page 1", "not a JSON object", "check FINANCE_API_BASE_URL"),
    "no_selector": ("no 'invoices' list", "check FINANCE_API_BASE_URL and the data selector"),
    "error_code": ("code 1002: organization does not exist", "check that message"),
    "endless": ("still more pages after 3", "never says has_more_page: false", "max_pages"),
    "token_without_access_token": (
        "without an access_token", "check that FINANCE_API_TOKEN_URL is the OAuth token endpoint",
    ),
}


def test_every_malformed_kind_is_covered() -> None:
    assert set(MALFORMED_EXPECTED) == set(MALFORMED_KINDS)


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_answers(sandbox: Sandbox, loaded, kind: str) -> None:
    sandbox.configure(malformed=kind)
    sandbox.reset_stats()
    message = fails_clearly(api_for(sandbox, max_pages=3), loaded[1], *MALFORMED_EXPECTED[kind])
    if kind.startswith("token"):  # the token endpoint is asked once; its sentence is the run's
        assert sandbox.stats()["requests"] == {"/oauth/v2/token": {"200": 1}}
        assert "invoices:" not in message
    else:
        assert "invoices:" in message and "taxes:" in message  # each failing endpoint named


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ({"refresh_token": "1000.not-the-refresh-token"},
         ("invalid_grant", "set FINANCE_API_REFRESH_TOKEN")),
        ({"client_secret": "not-the-secret"},
         ("invalid_client", "check FINANCE_API_CLIENT_ID and FINANCE_API_CLIENT_SECRET")),
    ],
    ids=["invalid_grant", "invalid_client"],
)
def test_refused_credentials(sandbox: Sandbox, loaded, credentials, expected) -> None:
    sandbox.reset_stats()
    message = fails_clearly(api_for(sandbox, **credentials), loaded[1], *expected)
    assert next(iter(credentials.values())) not in message
    token_requests = sandbox.stats()["requests"]["/oauth/v2/token"]
    assert sum(token_requests.values()) == 1 and set(sandbox.stats()["requests"]) == {
        "/oauth/v2/token"
    }  # asked once, then final: no endpoint was read


def warehouse_of(loaded: tuple[Sandbox, Path], source: str, tmp_path: Path) -> Path:
    """A copy of the loaded warehouse recording ``source`` as its own, so a run from a
    misconfigured URL meets that URL's own failure rather than the source guard."""
    database = tmp_path / "w.duckdb"
    shutil.copyfile(loaded[1], database)
    with duckdb.connect(str(database)) as conn:
        conn.begin()
        record_source(conn, source)
        conn.commit()
    return database


def test_unreachable_host(loaded, tmp_path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    api = api_for(loaded[0], base_url=url, token_url=url + "/oauth/v2/token", max_attempts=2)
    fails_clearly(api, warehouse_of(loaded, url, tmp_path), "token request: gave up after 2 "
                  "attempts", "connection failed", "check its status and the URL")


def test_wrong_base_url_404(sandbox: Sandbox, loaded, tmp_path) -> None:
    url = sandbox.base_url + "/v1"
    fails_clearly(api_for(sandbox, base_url=url), warehouse_of(loaded, url, tmp_path),
                  "GET /v1/invoices page 1: not found (404)", "check FINANCE_API_BASE_URL",
                  "should not include /v1")


@pytest.mark.parametrize(
    ("setting", "url", "expected"),
    [
        ("base_url", "http://api.example.com", "FINANCE_API_BASE_URL uses plain http on "
         "api.example.com; use https"),
        ("token_url", "http://auth.example.com/oauth/v2/token", "FINANCE_API_TOKEN_URL uses "
         "plain http on auth.example.com; use https"),
        ("base_url", "ftp://api.example.com", "is not an http(s) URL"),
    ],
)
def test_plain_http_off_loopback_is_refused_before_any_network(
    loaded, setting: str, url: str, expected: str
) -> None:
    """The refusal comes from the URL alone: no DNS lookup, no connection is attempted."""
    attempts: list[tuple] = []

    def audit(event: str, args: tuple) -> None:
        if event in ("socket.getaddrinfo", "socket.connect") and "example.com" in repr(args):
            attempts.append((event, args))

    listening[0] = audit
    try:
        result = run(api_for(loaded[0], **{setting: url}), loaded[1], SELECTION)
    finally:
        listening[0] = None
    assert not result.success
    message = failure_message(result)
    assert expected in message, message
    assert attempts == []


def test_refused_url_is_the_failure_headline(loaded) -> None:
    result = run(api_for(loaded[0], base_url="http://api.example.com"), loaded[1], SELECTION)
    assert "use https" in failure_message(result, headline=True)


def test_plain_http_on_loopback_is_allowed(sandbox: Sandbox, tmp_path) -> None:
    assert sandbox.base_url.startswith("http://127.0.0.1:")
    result = run(api_for(sandbox), tmp_path / "w.duckdb", ["taxes"])
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {
        dg.AssetKey("taxes")
    }
