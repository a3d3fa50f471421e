"""The rate limiter on a fake clock: configured cap, advertised budget, in-flight cap, 429.

A fake ``sleep`` advances the fake clock, so a simulated hour takes milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from finance_assets.api import FinanceApiClient, RateLimiter
from finance_assets.endpoints import ENDPOINTS
from finance_assets.sandbox import Sandbox


@contextmanager
def slot(limiter: RateLimiter) -> Iterator[None]:
    """One request's turn: acquired, then released whatever happens (as the transport does)."""
    limiter.acquire()
    try:
        yield
    finally:
        limiter.release()


class FakeClock:
    """Monotonic fake time; ``sleep`` advances it and records the wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
            self.now += seconds


class FixedWindowServer:
    """An API that counts requests in fixed 60 s windows and advertises truthfully."""

    def __init__(self, clock: FakeClock, limit: int) -> None:
        self.clock, self.limit = clock, limit
        self.start: float | None = None
        self.count = 0
        self.refused = 0

    def request(self) -> dict[str, str]:
        now = self.clock()
        if self.start is None or now - self.start >= 60:
            self.start, self.count = now, 0
        self.count += 1
        if self.count > self.limit:
            self.refused += 1
        reset = max(0, int(-(-(self.start + 60 - now) // 1)))  # whole seconds, rounded up
        return {
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(max(0, self.limit - self.count)),
            "X-Rate-Limit-Reset": str(reset),
        }


def most_in_any_window(times: list[float], window: float = 60.0) -> int:
    """The largest number of ``times`` inside any half-open window of ``window`` seconds."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window + 1e-6:  # float noise of the fake clock
            j += 1
        best = max(best, i - j + 1)
    return best


def test_configured_cap_holds_in_every_60s_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=10, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(55):
        with slot(limiter):
            times.append(clock())
        clock.now += 0.7  # the request itself takes a while
    assert most_in_any_window(times) == 10
    assert times[:10] == pytest.approx([0.7 * i for i in range(10)])  # no wait while under
    assert times[-1] >= 5 * 60  # 55 requests need five full minutes after the first ten


def test_advertised_budget_is_spread_and_never_exceeded() -> None:
    clock = FakeClock()
    server = FixedWindowServer(clock, limit=30)
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, max_in_flight=4)
    times = []
    for _ in range(100):
        with slot(limiter):
            times.append(clock())
            limiter.observe(server.request())
    assert server.refused == 0
    first_window = [t for t in times if t < 60]
    # Spread, not a burst and a long wait: the window's budget spans most of the minute.
    assert max(first_window) > 45
    gaps = [b - a for a, b in zip(first_window[4:], first_window[5:], strict=False)]
    assert max(gaps) < 3 * min(gaps)


def test_out_of_order_readings_with_requests_in_flight_never_exceed() -> None:
    clock = FakeClock()
    server = FixedWindowServer(clock, limit=20)
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, max_in_flight=4)
    for _ in range(40):  # batches of four concurrent requests, answered in reverse order
        for _ in range(4):
            limiter.acquire()
        readings = [server.request() for _ in range(4)]
        for headers in reversed(readings):
            limiter.observe(headers)
            limiter.release()
        clock.now += 0.1
    assert server.refused == 0
    # Deducting the requests in flight leaves a few of each window's 20 unused, not more:
    # 160 requests fit in 12 windows (8 would be the floor).
    assert clock.now < 60 * 12


def test_ample_budget_runs_at_full_speed() -> None:
    clock = FakeClock()
    server = FixedWindowServer(clock, limit=1_000_000)
    limiter = RateLimiter(per_minute=None, clock=clock, sleep=clock.sleep)
    for _ in range(2_000):
        with slot(limiter):
            limiter.observe(server.request())
        clock.now += 0.001  # 1,000 requests/s
    assert sum(clock.waits) == 0


def test_429_holds_everything_back_until_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    with slot(limiter):
        limiter.wait_after_429(30)
    with slot(limiter):
        assert clock() == pytest.approx(30)
    assert clock.waits == [30]  # one hold, sat out once


def test_429_with_headers_waits_for_the_advertised_reset() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    headers = {"x-rate-limit-limit": "10", "x-rate-limit-remaining": "0",
               "x-rate-limit-reset": "12"}  # lower-case keys of a plain dict work too
    with slot(limiter):
        limiter.observe(headers)
        limiter.wait_after_429(None)
    with slot(limiter):
        assert clock() >= 12


def test_missing_or_garbled_headers_change_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for headers in ({}, {"X-Rate-Limit-Remaining": "x", "X-Rate-Limit-Reset": "5"}):
        for _ in range(50):
            with slot(limiter):
                limiter.observe(headers)
    assert clock.waits == []


def test_in_flight_cap_with_threads() -> None:
    limiter = RateLimiter(max_in_flight=3)
    lock = threading.Lock()
    current = peak = 0

    def work() -> None:
        nonlocal current, peak
        with slot(limiter):
            with lock:
                current += 1
                peak = max(peak, current)
            time.sleep(0.01)
            with lock:
                current -= 1

    threads = [threading.Thread(target=work) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3
    assert limiter.in_flight == 0


def test_configured_cap_holds_across_threads() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=7, max_in_flight=4, clock=clock, sleep=clock.sleep)
    times: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            with slot(limiter):
                with lock:
                    times.append(clock())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(times) == 40
    assert most_in_any_window(times) <= 7


# ---------- the client against the sandbox ----------


class FakeMinutes:
    """Fake time for a client on a real sandbox whose rate window is a real minute.

    The client's limiter sleeps on this clock; when a fake minute has passed since
    the sandbox's window opened (its first answer after a reset), the sandbox's
    window is reset as the real minute would have.
    """

    def __init__(self, sandbox: Sandbox, limit: int) -> None:
        self.sandbox, self.limit = sandbox, limit
        self.now = 0.0
        self.window_start: float | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.window_start is not None and self.now - self.window_start >= 60:
            self.sandbox.configure(rate_limit=self.limit)  # clears the windows
            self.window_start = None

    def answered(self) -> None:
        if self.window_start is None:
            self.window_start = self.now


class Answered(httpx.BaseTransport):
    """The client's network transport, telling ``minutes`` of every answer."""

    def __init__(self, minutes: FakeMinutes) -> None:
        self.minutes = minutes
        self._network = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._network.handle_request(request)
        self.minutes.answered()
        return response

    def close(self) -> None:
        self._network.close()


def read_everything(client: FinanceApiClient) -> tuple[int, int]:
    """Read all 16 endpoints: the records, and the 429s the reads met."""
    records = rate_limited = 0
    for endpoint in ENDPOINTS:
        pages = client.iter_pages(endpoint.path, endpoint.data_selector)
        records += sum(len(page.records) for page in pages)
        rate_limited += pages.counts.rate_limited
    return records, rate_limited


@pytest.mark.parametrize(
    ("configured", "pace"), [(12, False), (None, True), (12, True)],
    ids=["configured-cap", "advertised-budget", "both"],
)
def test_client_meets_no_429_on_a_rate_limited_sandbox(
    make_sandbox, configured: int | None, pace: bool
) -> None:
    limit = 12
    sb = make_sandbox(scale=0.05, rate_limit=limit)
    minutes = FakeMinutes(sb, limit)
    with FinanceApiClient(
        sb.base_url, sb.token_url, sb.client_id, sb.client_secret, sb.refresh_token,
        per_page=50, sleep=minutes.sleep, clock=minutes,
        rate_limit_per_minute=configured, pace_by_headers=pace, http_transport=Answered(minutes),
    ) as client:
        records, rate_limited = read_everything(client)
    assert records == sum(len(sb.records(e.name)) for e in ENDPOINTS)
    requests = sb.stats()["api_requests"]
    assert requests > 2 * limit  # the read needed several windows
    assert sb.stats()["rate_limited"] == 0 and rate_limited == 0
    assert minutes.now >= 60 * (requests // limit - 1)


def test_429_with_retry_after_holds_only_that_long_within_a_known_window() -> None:
    """Retry-After is the API's word on when to retry: not a reason to sit out the window."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.observe(
        {"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "50", "X-Rate-Limit-Reset": "60"}
    )
    started = clock()
    limiter.wait_after_429(2)
    limiter.acquire()
    limiter.release()
    assert clock() - started == pytest.approx(2, abs=0.1)


def test_429_without_retry_after_waits_for_the_window_reset() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.observe(
        {"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "50", "X-Rate-Limit-Reset": "30"}
    )
    started = clock()
    limiter.wait_after_429(None)
    limiter.acquire()
    limiter.release()
    assert clock() - started == pytest.approx(30, abs=0.5)
