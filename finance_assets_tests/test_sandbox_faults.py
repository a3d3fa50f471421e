"""The sandbox's fault and bad-data switches, over real HTTP: what each one really serves."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from finance_assets.endpoints import ENDPOINTS
from finance_assets.records.validation import validate_page
from finance_assets.sandbox import MALFORMED_KINDS, Sandbox, SandboxConfig
from finance_assets.sandbox.__main__ import parse_args
from finance_assets.sandbox.data import BAD_VALUES
from finance_assets_tests.conftest import fetch_token


def get(sb: Sandbox, path: str, **params: int) -> httpx.Response:
    token = fetch_token(sb)
    return httpx.get(sb.base_url + path, params=params,
                     headers={"Authorization": f"Bearer {token}"}, timeout=5)


def test_malformed_list_answers(sandbox: Sandbox) -> None:
    sandbox.configure(malformed="not_json")
    r = get(sandbox, "/v1/users")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError):
        r.json()

    sandbox.configure(malformed="no_selector")
    body = get(sandbox, "/v1/users").json()
    assert body["code"] == 0 and "users" not in body and "page_context" in body

    sandbox.configure(malformed="error_code")
    r = get(sandbox, "/v1/users")
    assert r.status_code == 200 and r.json()["code"] not in (0, None)

    sandbox.configure(malformed="endless")
    for page in (1, 50, 10_000):
        body = get(sandbox, "/v1/users", page=page, per_page=7).json()
        assert len(body["users"]) == 7 and body["page_context"]["has_more_page"] is True

    sandbox.configure(malformed=None)
    body = json.loads(get(sandbox, "/v1/users").content, parse_float=Decimal)
    assert body["users"] == sandbox.records("users")


def test_token_without_access_token(sandbox: Sandbox) -> None:
    sandbox.configure(malformed="token_without_access_token")
    form = {"grant_type": "refresh_token", "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret, "refresh_token": sandbox.refresh_token}
    r = httpx.post(sandbox.token_url, data=form)
    assert r.status_code == 200 and "access_token" not in r.json()
    assert sandbox.issued_tokens() == []
    sandbox.configure(malformed=None)
    assert fetch_token(sandbox) == sandbox.issued_tokens()[-1]


def test_malformed_is_validated_and_live_over_admin(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError):
        SandboxConfig(malformed="teapot")
    admin = sandbox.base_url + "/__sandbox/config"
    assert httpx.post(admin, json={"malformed": "endless"}).json()["malformed"] == "endless"
    assert sandbox.config.malformed == "endless"
    assert set(MALFORMED_KINDS) >= {"not_json", "no_selector", "error_code", "endless"}


def test_bad_records_are_deterministic_and_unloadable(make_sandbox) -> None:
    sb = make_sandbox(bad_records=3)
    twin = Sandbox(SandboxConfig(scale=0.05, bad_records=3))
    for endpoint in ENDPOINTS:
        rows = sb.records(endpoint.name)
        assert rows == twin.records(endpoint.name), endpoint.name
        valid, rejected = validate_page(endpoint.model, rows)
        assert len(rejected) == min(3, len(rows)), endpoint.name
        assert all(r.record_id for r in rejected)  # ids and order stay intact
        for r in rejected:
            assert any(v in BAD_VALUES.values() for v in r.raw.values())
    reasons = " ".join(r.reason for e in ENDPOINTS
                       for r in validate_page(e.model, sb.records(e.name))[1])
    assert "valid decimal" in reasons and "valid date" in reasons and "valid string" in reasons


def test_429_fault_says_retry_after(make_sandbox) -> None:
    sb = make_sandbox(fault_rate=1.0, fault_kinds=("429",), retry_after=2)
    r = get(sb, "/v1/users")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2" and r.json()["code"] == 44
    assert sb.stats()["rate_limited"] == 1 and sb.stats()["faults_injected"] == 1


def test_slow_fault_answers_late(make_sandbox) -> None:
    sb = make_sandbox(fault_rate=1.0, fault_kinds=("slow",), slow_seconds=0.4)
    token = fetch_token(sb)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(sb.base_url + "/v1/users", headers={"Authorization": f"Bearer {token}"},
                  timeout=0.1)
    started = time.perf_counter()
    r = httpx.get(sb.base_url + "/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and time.perf_counter() - started >= 0.4


def test_default_fault_kinds_exclude_opt_in_ones(make_sandbox) -> None:
    sb = make_sandbox(fault_rate=1.0)
    token = fetch_token(sb)
    with httpx.Client(base_url=sb.base_url, timeout=5) as client:
        for _ in range(20):
            try:
                r = client.get("/v1/users", headers={"Authorization": f"Bearer {token}"})
            except httpx.TransportError:
                continue  # "close"
            assert r.status_code in (500, 502, 503, 504)


def test_rate_window_sets_retry_after(make_sandbox) -> None:
    sb = make_sandbox(rate_limit=1, rate_window=2)
    assert get(sb, "/v1/users").status_code == 200
    r = get(sb, "/v1/users")
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 2
    with pytest.raises(ValueError):
        SandboxConfig(rate_window=0)


def test_issued_tokens_lists_every_token(sandbox: Sandbox) -> None:
    first, second = fetch_token(sandbox), fetch_token(sandbox)
    sandbox.revoke_tokens()
    assert sandbox.issued_tokens() == [first, second]


def test_cli_parses_the_fault_flags() -> None:
    config = parse_args(["--malformed", "endless", "--bad-records", "2", "--rate-window", "5",
                         "--slow-seconds", "0.5", "--fault-kinds", "slow,429"])
    assert (config.malformed, config.bad_records, config.rate_window) == ("endless", 2, 5.0)
    assert config.slow_seconds == 0.5 and config.fault_kinds == ("slow", "429")
    assert json.dumps(config.__dict__)  # still plain data for the admin API
