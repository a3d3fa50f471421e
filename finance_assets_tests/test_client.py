"""The API client against the sandbox over real HTTP: auth, retries, pagination.

Waits use a fake ``sleep`` that records what the client asked for and then
clears the fault, so nothing really sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from finance_assets.api import (
    AuthError,
    FinanceApiClient,
    FinanceApiError,
    RequestCounts,
    RetryPolicy,
)
from finance_assets.endpoints import BY_NAME, ENDPOINTS
from finance_assets.sandbox import Sandbox


def client_for(sb: Sandbox, **kwargs) -> FinanceApiClient:
    creds = {
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "refresh_token": sb.refresh_token,
    }
    creds.update({k: kwargs.pop(k) for k in list(kwargs) if k in creds})
    return FinanceApiClient(sb.base_url, sb.token_url, **creds, **kwargs)


def read(client: FinanceApiClient, name: str) -> tuple[list[dict], RequestCounts]:
    """Every record of one endpoint read, and what the read cost."""
    endpoint = BY_NAME[name]
    pages = client.iter_pages(endpoint.path, endpoint.data_selector)
    return [r for p in pages for r in p.records], pages.counts


def read_all(client: FinanceApiClient, name: str) -> list[dict]:
    return read(client, name)[0]


def token_requests(sb: Sandbox) -> int:
    """Requests the sandbox's token endpoint received, whatever it answered."""
    return sum(sb.stats()["requests"].get(urlsplit(sb.token_url).path, {}).values())


class FakeSleep:
    """Records requested waits; after each one runs ``on_wait`` (e.g. lift the fault)."""

    def __init__(self, on_wait: Callable[[], None] = lambda: None) -> None:
        self.waits: list[float] = []
        self.on_wait = on_wait

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.on_wait()


def test_one_token_for_all_endpoints_and_exact_records(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05)
    pages = requests = 0
    with client_for(sb, per_page=50) as client:
        for endpoint in ENDPOINTS:
            records, counts = read(client, endpoint.name)
            assert records == sb.records(endpoint.name)
            pages, requests = pages + counts.pages, requests + counts.requests
    assert sb.stats()["tokens_issued"] == 1
    assert token_requests(sb) == 1
    assert pages == requests == sb.stats()["api_requests"]  # token requests are not counted


def test_decimals_are_exact_and_ids_strings(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05)
    with client_for(sb) as client:
        invoices = read_all(client, "invoices")
    assert all(isinstance(r["id"], str) for r in invoices)
    totals = [r["total"] for r in invoices if r["total"] is not None]
    assert totals and all(isinstance(t, Decimal) for t in totals)


def test_revoked_token_is_refreshed_once_and_request_retried(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05)
    with client_for(sb, per_page=20) as client:
        pages = client.iter_pages(BY_NAME["contacts"].path, "contacts")
        first = next(pages)
        sb.revoke_tokens()
        rest = [r for p in pages for r in p.records]
    assert first.records + rest == sb.records("contacts")
    assert sb.stats()["tokens_issued"] == 2


def test_token_expiring_after_n_uses_is_refreshed_mid_run(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05, token_max_uses=3)
    with client_for(sb, per_page=10) as client:
        records = read_all(client, "contacts")
    assert records == sb.records("contacts")
    pages = sb.stats()["api_requests"]
    assert pages > 6
    # one token per three uses; a 401 costs one extra request per refresh
    assert sb.stats()["tokens_issued"] >= pages // 4


def test_token_is_cached_until_shortly_before_expiry(make_sandbox) -> None:
    now = [1000.0]
    sb = make_sandbox(scale=0.02)
    with client_for(sb, clock=lambda: now[0]) as client:
        client.authenticate()
        client.authenticate()
        assert sb.stats()["tokens_issued"] == 1
        now[0] += 3600 - 30  # inside the expiry margin
        client.authenticate()
        assert sb.stats()["tokens_issued"] == 2
        read_all(client, "users")  # with the new token
    assert sb.stats()["tokens_issued"] == 2
    assert sb.stats()["requests"]["/v1/users"] == {"200": 1}


def test_invalid_grant_names_the_refresh_token_without_its_value(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02)
    secret = "wrong-refresh-token-sentinel-77"
    with client_for(sb, refresh_token=secret) as client, pytest.raises(AuthError) as info:
        read_all(client, "users")
    message = str(info.value)
    assert "FINANCE_API_REFRESH_TOKEN" in message and "invalid_grant" in message
    assert secret not in message and sb.client_secret not in message
    assert "\n" not in message


def test_invalid_client_names_the_client_settings(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02)
    with client_for(sb, client_secret="nope") as client, pytest.raises(AuthError) as info:
        read_all(client, "users")
    assert "FINANCE_API_CLIENT_SECRET" in str(info.value)
    assert "nope" not in str(info.value)


@pytest.mark.parametrize(
    ("revoke", "expected"),
    [
        ({"refresh_token": "1000.rotated-by-the-provider"}, "invalid_grant"),
        ({"client_secret": "rotated-by-the-provider"}, "invalid_client"),
    ],
    ids=["refresh-token-revoked", "client-secret-rotated"],
)
def test_a_refusal_is_final_for_every_thread(make_sandbox, revoke, expected: str) -> None:
    """Mid-run, the access token and then the credentials are revoked: the concurrent
    endpoint reads ask the token endpoint once, and every one fails with its answer."""
    sb = make_sandbox(scale=0.02)
    with client_for(sb, max_in_flight=16) as client:
        client.authenticate()
        sb.revoke_tokens()
        sb.configure(**revoke)
        sb.reset_stats()

        def fails(name: str) -> str:
            with pytest.raises(AuthError) as info:
                read_all(client, name)
            return str(info.value)

        with ThreadPoolExecutor(8) as pool:
            messages = list(pool.map(fails, BY_NAME))
        with pytest.raises(AuthError) as later:
            client.authenticate()
    assert token_requests(sb) == 1
    assert len(set(messages)) == 1 and messages[0] == str(later.value)
    assert expected in messages[0] and "\n" not in messages[0]
    assert sb.stats()["api_requests"] <= 8  # at most the requests already sent meanwhile


def test_token_requests_are_not_rate_limited(make_sandbox) -> None:
    """The contract does not count token requests: under a cap of two requests a minute,
    a page refused with 401 and sent again costs no wait, for all its two token requests."""
    sb = make_sandbox(scale=0.02)
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with client_for(sb, sleep=sleep, clock=lambda: now[0], rate_limit_per_minute=2) as client:
        client.authenticate()
        sb.revoke_tokens()
        assert read_all(client, "users") == sb.records("users")
    assert sb.stats()["tokens_issued"] == 2
    assert sb.stats()["requests"]["/v1/users"] == {"401": 1, "200": 1}
    assert waits == []


def test_429_waits_retry_after_then_succeeds(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05, rate_limit=2)
    sleep = FakeSleep(on_wait=lambda: sb.configure(rate_limit=None))
    # pacing by the advertised budget would avoid the 429; this test is about meeting one
    with client_for(sb, per_page=20, sleep=sleep, pace_by_headers=False) as client:
        records, counts = read(client, "contacts")
    assert records == sb.records("contacts")
    assert counts.rate_limited == 1
    assert len(sleep.waits) == 1 and 0 < sleep.waits[0] <= 60
    assert sleep.waits[0] == int(sleep.waits[0])  # Retry-After is whole seconds, honoured as given


@pytest.mark.parametrize("kind", ["500", "502", "503", "504", "close"])
def test_transient_faults_are_retried_with_backoff(make_sandbox, kind: str) -> None:
    sb = make_sandbox(scale=0.05, fault_rate=0.5, fault_kinds=(kind,), seed=7)
    sleep = FakeSleep()
    with client_for(sb, per_page=20, sleep=sleep) as client:
        records, counts = read(client, "contacts")
    assert records == sb.records("contacts")
    assert counts.retries == len(sleep.waits) > 0
    assert sb.stats()["faults_injected"] == counts.retries


def test_backoff_grows_exponentially_with_jitter(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02, fault_rate=1.0, fault_kinds=("503",))
    sleep = FakeSleep()
    policy = RetryPolicy(max_attempts=5, backoff_base=1.0, backoff_max=100.0)
    with (
        client_for(sb, sleep=sleep, retry=policy) as client,
        pytest.raises(FinanceApiError) as info,
    ):
        read_all(client, "users")
    assert len(sleep.waits) == 4
    for attempt, wait in enumerate(sleep.waits, start=1):
        assert 2 ** (attempt - 1) * 0.5 <= wait <= 2 ** (attempt - 1)
    message = str(info.value)
    assert "gave up after 5 attempts" in message and "HTTP 503" in message
    assert sb.stats()["api_requests"] == 5


def test_retry_budget_in_time_is_bounded(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02, fault_rate=1.0, fault_kinds=("500",))
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(max_attempts=100, backoff_base=10.0, backoff_max=10.0, max_elapsed=30.0)
    with client_for(sb, sleep=sleep, clock=lambda: now[0], retry=policy) as client:
        with pytest.raises(FinanceApiError, match="gave up"):
            read_all(client, "users")
    assert now[0] <= 30.0
    assert sb.stats()["api_requests"] < 10


def test_read_timeout_is_retried(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02, latency=0.5)
    sleep = FakeSleep(on_wait=lambda: sb.configure(latency=0.0))
    with client_for(sb, timeout=0.1, sleep=sleep) as client:
        records = read_all(client, "users")
    assert records == sb.records("users")
    assert len(sleep.waits) == 1


def test_unreachable_host_fails_with_one_clear_sentence() -> None:
    sleep = FakeSleep()
    policy = RetryPolicy(max_attempts=2)
    with FinanceApiClient(
        "http://127.0.0.1:9", "http://127.0.0.1:9/oauth/v2/token", "a", "b", "c",
        sleep=sleep, retry=policy,
    ) as client, pytest.raises(FinanceApiError) as info:  # fmt: skip
        read_all(client, "users")
    assert "connection failed" in str(info.value) and "\n" not in str(info.value)


def test_400_and_404_are_not_retried(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02)
    with client_for(sb) as client:
        missing = client.iter_pages("/v1/nothing", "nothing")
        with pytest.raises(FinanceApiError, match="404"):
            list(missing)
        refused = client.iter_pages("/v1/users", "users", modified_since="not-a-date")
        with pytest.raises(FinanceApiError, match="code 2"):
            list(refused)
    assert sb.stats()["api_requests"] == 2
    assert missing.counts.retries == refused.counts.retries == 0
    assert missing.counts.requests == refused.counts.requests == 1


def test_missing_data_selector_is_a_clear_error(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02)
    with client_for(sb) as client, pytest.raises(FinanceApiError, match="no 'usrs' list"):
        list(client.iter_pages("/v1/users", "usrs"))


def test_page_guard_trips_on_too_many_pages(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05)
    with client_for(sb, per_page=5, max_pages=2) as client:
        with pytest.raises(FinanceApiError, match="still more pages after 2"):
            read_all(client, "contacts")


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(FinanceApiError, match="use https"):
        FinanceApiClient("http://api.example.com", "https://auth.example.com/t", "a", "b", "c")


# ---- a deliberately broken API, for stop rules the sandbox never breaks ----


class _Broken(BaseHTTPRequestHandler):
    """Serves whatever ``behaviour`` says; a real server, misbehaving on purpose."""

    behaviour: dict = {}

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(200, json.dumps(self.behaviour.get("token", {"access_token": "t"})).encode())

    def do_GET(self) -> None:  # noqa: N802
        page = int(self.path.split("page=")[1].split("&")[0])
        body = self.behaviour["page"](page)
        self._send(200, body if isinstance(body, bytes) else json.dumps(body).encode())


@pytest.fixture
def broken() -> Iterator[tuple[str, dict]]:
    behaviour: dict = {}
    handler = type("Handler", (_Broken,), {"behaviour": behaviour})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", behaviour
    server.shutdown()
    server.server_close()


def envelope(records: list, page: int, has_more: bool) -> dict:
    return {
        "code": 0,
        "message": "success",
        "users": records,
        "page_context": {"page": page, "per_page": 2, "has_more_page": has_more},
    }


def broken_client(url: str, **kwargs) -> FinanceApiClient:
    return FinanceApiClient(url, url + "/token", "a", "b", "c", per_page=2, **kwargs)


def test_short_page_stops_even_if_has_more_says_true(broken) -> None:
    url, behaviour = broken
    behaviour["page"] = lambda p: envelope([{"id": str(p)}] * (2 if p == 1 else 1), p, True)
    with broken_client(url) as client:
        pages = list(client.iter_pages("/v1/users", "users"))
    assert [len(p.records) for p in pages] == [2, 1]


def test_empty_page_stops(broken) -> None:
    url, behaviour = broken
    behaviour["page"] = lambda p: envelope([{"id": "1"}, {"id": "2"}] if p == 1 else [], p, True)
    with broken_client(url) as client:
        pages = list(client.iter_pages("/v1/users", "users"))
    assert [len(p.records) for p in pages] == [2, 0]


def test_endless_api_trips_the_page_guard(broken) -> None:
    url, behaviour = broken
    behaviour["page"] = lambda p: envelope([{"id": "1"}, {"id": "2"}], p, True)
    with broken_client(url, max_pages=50) as client, pytest.raises(FinanceApiError, match="50"):
        list(client.iter_pages("/v1/users", "users"))


def test_token_response_without_access_token_is_an_error(broken) -> None:
    url, behaviour = broken
    behaviour["token"] = {"token_type": "Bearer", "expires_in": 3600}
    behaviour["page"] = lambda p: envelope([], p, False)
    with broken_client(url) as client, pytest.raises(AuthError, match="without an access_token"):
        list(client.iter_pages("/v1/users", "users"))


@pytest.mark.parametrize("bypass", [False, True], ids=["proxied", "no_proxy"])
def test_the_proxy_the_environment_names_is_used(broken, monkeypatch, bypass: bool) -> None:
    """As with httpx's default transport: HTTP_PROXY carries the requests, unless NO_PROXY
    names the host. Nothing listens on the other address, so only the right one answers."""
    url, behaviour = broken
    behaviour["page"] = lambda p: envelope([{"id": "1"}], p, False)
    nowhere = "http://127.0.0.1:9"
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", nowhere if bypass else url)
    if bypass:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    api = url if bypass else nowhere  # a proxy is sent the full URL: the API's host is moot
    with broken_client(api, retry=RetryPolicy(max_attempts=1)) as client:
        pages = list(client.iter_pages("/v1/users", "users"))
    assert [p.records for p in pages] == [[{"id": "1"}]]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>oops</html>", "not a JSON object"),
        ({"code": 9, "message": "boom"}, "code 9"),
    ],
)
def test_bad_bodies_fail_clearly(broken, body, match: str) -> None:
    url, behaviour = broken
    behaviour["page"] = lambda p: body
    with broken_client(url) as client, pytest.raises(FinanceApiError, match=match):
        list(client.iter_pages("/v1/users", "users"))
