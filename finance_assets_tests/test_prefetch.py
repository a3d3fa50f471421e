"""Pages requested ahead within one endpoint (``prefetch_pages``), over real HTTP.

The sandbox serves the data; a small scripted server (below) answers page by page
as told, for the cases the sandbox cannot stage on one page: a needed page that
fails, a page past the end that fails, and counting requests in flight at the server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from finance_assets.api import GUESS_AHEAD_AFTER, FinanceApiClient, FinanceApiError, Page
from finance_assets.endpoints import BY_NAME, ENDPOINTS
from finance_assets.resources import FinanceApiResource
from finance_assets.sandbox import Sandbox

INVOICES = BY_NAME["invoices"]  # 200 records at scale 0.05


def client_for(sb: Sandbox, **kwargs: Any) -> FinanceApiClient:
    """A client that guesses pages ahead at any round trip (unless told otherwise): the
    loopback sandbox answers faster than ``GUESS_AHEAD_AFTER``."""
    kwargs.setdefault("guess_ahead_after", 0.0)
    return FinanceApiClient(
        sb.base_url, sb.token_url, sb.client_id, sb.client_secret, sb.refresh_token, **kwargs
    )


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("finance-prefetch")]


class Gauge:
    """Counts calls in progress and the most ever at once (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.started = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.started += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


class GaugedTransport(httpx.BaseTransport):
    """The client's network transport, with a gauge of page requests (GETs) in progress,
    each from its start until its body has arrived."""

    def __init__(self) -> None:
        self.gauge = Gauge()
        self._network = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":  # token requests
            return self._network.handle_request(request)
        self.gauge.enter()
        try:
            response = self._network.handle_request(request)
            response.read()
            return response
        finally:
            self.gauge.leave()

    def close(self) -> None:
        self._network.close()


# ---------- a scripted API: each page answers as the test says ----------


@dataclass
class Answer:
    """What the scripted server sends for one page: status, body, after a delay."""

    body: dict[str, Any]
    status: int = 200
    delay: float = 0.0


def page_of(n: int, page: int, has_more: bool, selector: str = "users") -> Answer:
    records = [{"id": f"{page}-{i}"} for i in range(n)]
    return Answer({"code": 0, "message": "success", selector: records,
                   "page_context": {"page": page, "has_more_page": has_more}})  # fmt: skip


ERROR_CODE = Answer({"code": 9, "message": "boom"})
NOT_FOUND = Answer({"code": 5, "message": "not found"}, status=404)


class _Scripted(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedApi

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # An ample advertised budget, as the contract's headers say it: guesses are cheap.
        self.send_header("X-Rate-Limit-Limit", "100000")
        self.send_header("X-Rate-Limit-Remaining", "99999")
        self.send_header("X-Rate-Limit-Reset", "60")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(200, {"access_token": "t", "expires_in": 3600})

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        page = int(parse_qs(parts.query)["page"][0])
        api = self.server
        api.gauge.enter()
        try:
            with api.lock:
                api.asked.append((parts.path, page))
            answer = api.script(parts.path, page)
            time.sleep(answer.delay)
            self._send(answer.status, answer.body)
        finally:
            api.gauge.leave()


class ScriptedApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Callable[[str, int], Answer]) -> None:
        super().__init__(("127.0.0.1", 0), _Scripted)
        self.script = script
        self.gauge = Gauge()  # requests being answered right now, at the server
        self.lock = threading.Lock()
        self.asked: list[tuple[str, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def client(self, **kwargs: Any) -> FinanceApiClient:
        kwargs.setdefault("guess_ahead_after", 0.0)  # as ``client_for``
        return FinanceApiClient(self.url, self.url + "/token", "a", "b", "c", **kwargs)


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str, int], Answer]], ScriptedApi]]:
    servers: list[ScriptedApi] = []

    def start(script: Callable[[str, int], Answer]) -> ScriptedApi:
        server = ScriptedApi(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def three_pages(page: int, *, past_end: Answer, delay: float = 0.0) -> Answer:
    """Two full pages of 2 and a short third; ``past_end`` for any later page."""
    if page <= 2:
        return Answer(page_of(2, page, True).body, delay=delay)
    if page == 3:
        return Answer(page_of(1, page, True).body, delay=delay)
    return past_end


# ---------- speed, order and the same records ----------


def test_prefetch_overlaps_requests_and_yields_the_same_pages_in_order(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05, latency=0.05)
    results: dict[int, tuple[list[Page], Gauge]] = {}
    for prefetch in (1, 4):
        transport = GaugedTransport()
        with client_for(
            sb, per_page=10, prefetch_pages=prefetch, http_transport=transport
        ) as client:
            pages = list(client.iter_pages(INVOICES.path, INVOICES.data_selector))
            results[prefetch] = (pages, transport.gauge)
    (one, one_gauge), (four, four_gauge) = results[1], results[4]
    assert [p.number for p in four] == list(range(1, 21)) == [p.number for p in one]
    assert [r for p in four for r in p.records] == [r for p in one for r in p.records]
    assert [r for p in four for r in p.records] == sb.records("invoices")
    assert one_gauge.most == 1
    assert four_gauge.most == 4  # requests really overlapped, and never more than asked


def test_concurrent_endpoints_on_one_client_each_get_their_own_records(make_sandbox) -> None:
    """The assets read 4 endpoints at once from threads sharing the client and its token."""
    sb = make_sandbox(scale=0.05, latency=0.01)
    with client_for(sb, per_page=10, prefetch_pages=3) as client:

        def read(name: str) -> list[dict[str, Any]]:
            endpoint = BY_NAME[name]
            pages = client.iter_pages(endpoint.path, endpoint.data_selector)
            return [r for p in pages for r in p.records]

        with ThreadPoolExecutor(4) as pool:
            got = dict(zip(BY_NAME, pool.map(read, BY_NAME), strict=True))
    assert got == {e.name: sb.records(e.name) for e in ENDPOINTS}
    assert sb.stats()["tokens_issued"] == 1
    assert not prefetch_threads()


# ---------- no speculation before a page says there is more ----------


@pytest.mark.parametrize(
    ("name", "per_page", "since"),
    [
        ("users", 200, None),  # a short page 1
        ("invoices", 200, None),  # a full page 1 that says there is no more
        ("invoices", 10, "2999-01-01T00:00:00Z"),  # incremental, nothing changed: empty page 1
    ],
    ids=["short", "full-last", "empty-incremental"],
)
def test_a_last_page_1_costs_exactly_one_request(
    make_sandbox, name: str, per_page: int, since: str | None
) -> None:
    sb = make_sandbox(scale=0.05)
    endpoint = BY_NAME[name]
    with client_for(sb, per_page=per_page, prefetch_pages=4) as client:
        read = client.iter_pages(endpoint.path, endpoint.data_selector, since)
        pages = list(read)
    calls = read.counts
    assert len(pages) == 1
    assert sb.stats()["api_requests"] == 1
    assert calls.requests == calls.pages == 1
    assert not prefetch_threads()


@pytest.mark.parametrize("prefetch", [2, 3, 4, 7])
@pytest.mark.parametrize("per_page", [7, 10, 50])
def test_wasted_requests_past_the_end_are_fewer_than_prefetch(
    make_sandbox, prefetch: int, per_page: int
) -> None:
    sb = make_sandbox(scale=0.05)
    with client_for(sb, per_page=per_page, prefetch_pages=prefetch) as client:
        pages = list(client.iter_pages(INVOICES.path, INVOICES.data_selector))
    assert [r for p in pages for r in p.records] == sb.records("invoices")
    wasted = sb.stats()["api_requests"] - len(pages)
    assert 0 <= wasted <= prefetch - 1


@pytest.mark.parametrize(
    "limits",
    [
        {"sandbox": {"rate_limit": 120}, "client": {}},  # the API advertises a tight limit
        {"sandbox": {}, "client": {"rate_limit_per_minute": 100_000}},  # a configured cap
        {"sandbox": {}, "client": {"pace_by_headers": False}},  # the limit is never learned
    ],
    ids=["advertised-120", "configured-cap", "headers-ignored"],
)
def test_no_guessed_pages_when_requests_are_not_cheap(make_sandbox, limits) -> None:
    """Under a rate limit a wasted request costs run time: only pages known to exist
    (the one after a page that says more) are asked ahead, so requests == pages."""
    sb = make_sandbox(scale=0.05, latency=0.02, **limits["sandbox"])
    seen = Gauge()

    def decode(body: bytes) -> None:  # runs in the fetching thread: counts fetches at once
        seen.enter()
        time.sleep(0.01)
        seen.leave()

    with client_for(sb, per_page=10, prefetch_pages=4, **limits["client"]) as client:
        pages = []
        for page in client.iter_pages(INVOICES.path, INVOICES.data_selector, decode=decode):
            time.sleep(0.03)  # loading the page: the next one is fetched meanwhile
            pages.append(page)
    assert [r for p in pages for r in p.records] == sb.records("invoices")
    assert sb.stats()["api_requests"] == len(pages) == 20
    assert seen.most == 1  # one page ahead at most, never a guess
    assert sb.stats()["rate_limited"] == 0


@pytest.mark.parametrize(
    ("latency", "after"), [(0.0, 10.0), (0.06, GUESS_AHEAD_AFTER)], ids=["near", "far"]
)
def test_pages_are_guessed_ahead_only_where_round_trips_are_slow(
    make_sandbox, latency: float, after: float
) -> None:
    """Where round trips are faster than ``guess_ahead_after`` only the page known to
    exist is asked ahead (more threads would only trade the GIL); where they are slower
    (60 ms against the shipped ``GUESS_AHEAD_AFTER``), pages past it are guessed too."""
    sb = make_sandbox(scale=0.05, latency=latency)
    transport = GaugedTransport()
    with client_for(sb, per_page=10, guess_ahead_after=after, http_transport=transport) as client:
        gauge = transport.gauge
        ahead = []
        for taken, _page in enumerate(client.iter_pages(INVOICES.path, "invoices"), start=1):
            time.sleep(0.02)  # the fetches run ahead while the consumer works
            ahead.append(gauge.started - taken)
    if latency:
        assert max(ahead) == client.prefetch_pages - 1  # guessed pages, up to the window
    else:
        assert max(ahead) == 1  # the next page only
        assert sb.stats()["api_requests"] == 20  # no guess wasted past the end


def test_pages_ahead_of_a_slow_consumer_stay_within_prefetch(make_sandbox) -> None:
    """Memory bound: requested-or-held and not yet yielded is never above ``prefetch_pages``."""
    sb = make_sandbox(scale=0.05)
    transport = GaugedTransport()
    with client_for(sb, per_page=10, prefetch_pages=3, http_transport=transport) as client:
        gauge = transport.gauge
        ahead = []
        for taken, _page in enumerate(client.iter_pages(INVOICES.path, "invoices"), start=1):
            time.sleep(0.02)  # the fetches run ahead while the consumer works
            ahead.append(gauge.started - taken)
    assert max(ahead) == 2  # while the consumer holds page k: k+1, k+2 requested
    assert gauge.started - 20 <= 2


def test_page_guard_holds_with_prefetch(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05)
    sb.configure(malformed="endless")
    messages = []
    for prefetch in (1, 4):
        sb.reset_stats()
        with client_for(sb, per_page=5, max_pages=6, prefetch_pages=prefetch) as client:
            with pytest.raises(FinanceApiError, match="still more pages after 6") as info:
                list(client.iter_pages(INVOICES.path, INVOICES.data_selector))
        messages.append(str(info.value))
        assert sb.stats()["api_requests"] == 6  # never a page past max_pages
    assert messages[0] == messages[1]


# ---------- failures: of a needed page, and of a page past the end ----------


@pytest.mark.parametrize("failure", [ERROR_CODE, NOT_FOUND], ids=["error-code", "404"])
def test_a_needed_page_failing_raises_the_same_one_line_error(scripted, failure) -> None:
    def script(path: str, page: int) -> Answer:
        return page_of(2, page, True) if page != 3 else failure

    api = scripted(script)
    messages = []
    for prefetch in (1, 4):
        with api.client(per_page=2, prefetch_pages=prefetch) as client:
            got: list[int] = []
            with pytest.raises(FinanceApiError) as info:
                for page in client.iter_pages("/v1/users", "users"):
                    got.append(page.number)
            assert got == [1, 2]  # the pages before the failure were yielded
            assert client.limiter.in_flight == 0
        messages.append(str(info.value))
        assert not prefetch_threads()
    assert messages[0] == messages[1]
    assert messages[0].startswith("GET /v1/users page 3: ") and "\n" not in messages[0]
    assert api.gauge.now == 0


@pytest.mark.parametrize("past_end", [ERROR_CODE, NOT_FOUND], ids=["error-code", "404"])
def test_a_failing_page_past_the_end_does_not_fail_the_pass(scripted, past_end) -> None:
    # the last needed page answers slowly, so the pages past it have failed before it arrives
    api = scripted(lambda path, page: three_pages(page, past_end=past_end, delay=0.1 * (page == 3)))
    with api.client(per_page=2, prefetch_pages=4) as client:
        pages = list(client.iter_pages("/v1/users", "users"))
    assert [len(p.records) for p in pages] == [2, 2, 1]
    asked = sorted(page for _, page in api.asked)
    assert asked[:3] == [1, 2, 3] and len(asked) - 3 <= 3
    assert max(asked) > 3  # a page past the end was really asked, and failed, harmlessly
    assert not prefetch_threads()


# ---------- the consumer stops early: nothing outlives the generator ----------


def test_closing_after_the_first_page_leaves_no_thread_and_no_request(scripted) -> None:
    api = scripted(lambda path, page: Answer(page_of(2, page, True).body, delay=0.5 * (page > 1)))
    with api.client(per_page=2, prefetch_pages=4) as client:
        with closing(client.iter_pages("/v1/users", "users")) as pages:
            first = next(pages)
            deadline = time.monotonic() + 0.4
            while api.gauge.now < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert api.gauge.now == 3 and len(prefetch_threads()) == 3  # pages 2-4 asked
        assert first.number == 1
        assert not prefetch_threads()
        assert api.gauge.now == 0 and client.limiter.in_flight == 0
        asked = len(api.asked)
        time.sleep(0.6)
        assert len(api.asked) == asked <= 4  # nothing was asked after the close


def test_an_error_in_the_consumer_loop_leaves_no_thread_and_no_request(scripted) -> None:
    api = scripted(lambda path, page: Answer(page_of(2, page, True).body, delay=0.1))
    with api.client(per_page=2, prefetch_pages=4) as client:

        def consume() -> None:
            for page in client.iter_pages("/v1/users", "users"):
                if page.number == 3:
                    raise ValueError("the consumer gave up")

        with pytest.raises(ValueError, match="gave up"):
            consume()
        assert not prefetch_threads()
        assert api.gauge.now == 0 and client.limiter.in_flight == 0
        assert len(api.asked) <= 3 + 3


# ---------- the shared limiter and the page decoder still apply ----------


def test_the_limiter_bounds_requests_in_flight_across_endpoints(scripted) -> None:
    api = scripted(lambda path, page: Answer(page_of(2, page, page < 6).body, delay=0.05))
    with api.client(per_page=2, prefetch_pages=4, max_in_flight=3) as client:

        def read(n: int) -> int:
            return len(list(client.iter_pages(f"/v1/r{n}", "users")))

        with ThreadPoolExecutor(4) as pool:
            counts = list(pool.map(read, range(4)))
    assert counts == [6, 6, 6, 6]
    assert api.gauge.most == 3  # 4 endpoints x 4 pages ahead, yet 3 at a time at the server
    assert not prefetch_threads()


def test_prefetch_alone_reaches_the_server_concurrently(scripted) -> None:
    """The counterpart of the limiter test: without a tight limiter, 4 pages at once."""
    api = scripted(lambda path, page: Answer(page_of(2, page, page < 9).body, delay=0.05))
    with api.client(per_page=2, prefetch_pages=4) as client:
        assert len(list(client.iter_pages("/v1/users", "users"))) == 9
    assert api.gauge.most == 4


@dataclass(frozen=True)
class Sized:
    size: int
    has_more: bool
    thread: str


def test_page_decoder_runs_in_the_fetching_threads(make_sandbox) -> None:
    sb = make_sandbox(scale=0.05)

    def decode(body: bytes) -> Sized:
        decoded = json.loads(body)
        more = decoded["page_context"]["has_more_page"]
        return Sized(len(decoded["invoices"]), more, threading.current_thread().name)

    with client_for(sb, per_page=10, prefetch_pages=4) as client:
        pages = list(client.iter_pages(INVOICES.path, "invoices", decode=decode))
    assert [p.size for p in pages] == [10] * 20
    assert all(p.records is None and p.decoded is not None for p in pages)
    threads = {p.decoded.thread for p in pages[1:]}  # type: ignore[union-attr]
    assert threads and all(name.startswith("finance-prefetch") for name in threads)


# ---------- settings ----------


def test_prefetch_below_one_is_refused(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02)
    with pytest.raises(FinanceApiError, match="prefetch_pages=0"):
        client_for(sb, prefetch_pages=0)


def test_resource_passes_prefetch_pages_to_the_client(make_sandbox) -> None:
    sb = make_sandbox(scale=0.02)
    settings = {
        "base_url": sb.base_url, "token_url": sb.token_url, "client_id": sb.client_id,
        "client_secret": sb.client_secret, "refresh_token": sb.refresh_token,
    }  # fmt: skip
    with FinanceApiResource(**settings).client() as client:
        assert client.prefetch_pages == 4
    with FinanceApiResource(**settings, prefetch_pages=1).client() as client:
        assert client.prefetch_pages == 1
    with pytest.raises(Exception, match="prefetch_pages"):
        FinanceApiResource(**settings, prefetch_pages=0)
