"""Retries and rate limiting as an httpx transport, under the client's auth and paging.

``RetryTransport`` wraps the transport that does the network I/O (``httpx.HTTPTransport``)
and is mounted on an ``httpx.Client``, so each request the client (or its auth flow)
sends is retried here on transient failures, paced by the shared ``RateLimiter`` and
counted into the ``RequestCounts`` the request carries in its extensions.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from urllib.parse import urlsplit

import httpx

from finance_assets.api.errors import FinanceApiError
from finance_assets.api.ratelimit import RateLimiter

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# Request extensions this transport reads (httpx hands ``request.extensions`` down the
# layers; httpcore ignores keys it does not know).
COUNTS_EXTENSION = "finance_api.counts"  # the RequestCounts the request's attempts add to
DESCRIPTION_EXTENSION = "finance_api.description"  # how error messages name the request


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying transient failures (429, 5xx, connection errors, timeouts)."""

    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_elapsed: float = 300.0  # total seconds one request may spend retrying
    max_retry_after: float = 120.0  # a longer Retry-After fails fast instead of hanging


@dataclass
class RequestCounts:
    """What a group of requests (one endpoint's read) cost at the API; thread-safe.

    The transport counts each attempt of a request that carries this object under
    ``COUNTS_EXTENSION``; the client adds the pages it received.
    """

    requests: int = 0  # attempts sent to the API: retries and repeats after a 401 too
    retries: int = 0  # attempts repeated after a transient failure
    rate_limited: int = 0  # 429 answers met
    pages: int = 0  # pages received, pages fetched ahead past the end included
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class RetryTransport(httpx.BaseTransport):
    """Sends a request through ``wrapped`` with bounded, jittered exponential backoff.

    With a ``limiter`` each attempt waits for its turn and holds an in-flight slot
    until its response has been read (never while backing off), ``pace_by_headers``
    feeds the limiter each response's rate-limit headers, and a 429 holds every
    request back for its Retry-After. The body is read here, inside the slot, so a
    request is in flight until its last byte has arrived.
    """

    def __init__(
        self,
        wrapped: httpx.BaseTransport,
        policy: RetryPolicy,
        *,
        limiter: RateLimiter | None = None,
        pace_by_headers: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._wrapped = wrapped
        self.policy = policy
        self._limiter = limiter
        self._observe = limiter is not None and pace_by_headers
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter in [0.5, 1.0] of the step."""
        step = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempt - 1))
        return step * self._rng.uniform(0.5, 1.0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """The first response that is not worth retrying, or FinanceApiError past the bounds."""
        counts: RequestCounts | None = request.extensions.get(COUNTS_EXTENSION)
        policy = self.policy
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            response, problem = self._attempt(request, counts)
            wait = None
            if response is not None:
                status = response.status_code
                if status not in RETRY_STATUSES:
                    return response
                problem = f"HTTP {status}"
                if status == 429:
                    if counts is not None:
                        counts.add("rate_limited")
                    wait = _retry_after(response)
                    if wait is not None and wait > policy.max_retry_after:
                        raise FinanceApiError(
                            f"{_describe(request)}: rate limited with Retry-After {wait:.0f}s, "
                            f"longer than the {policy.max_retry_after:.0f}s allowed; the daily "
                            "quota may be spent, try again later."
                        )
            if wait is None:
                wait = self.backoff(attempt)
            elapsed = self._clock() - started
            if attempt >= policy.max_attempts or elapsed + wait > policy.max_elapsed:
                raise FinanceApiError(
                    f"{_describe(request)}: gave up after {attempt} attempts in {elapsed:.0f}s, "
                    f"last error {problem}; the API is failing or unreachable, check its status "
                    "and the URL."
                )
            if counts is not None:
                counts.add("retries")
            if self._limiter is not None and response is not None and response.status_code == 429:
                self._limiter.wait_after_429(wait)  # this thread sleeps; the others are held
            else:
                self._sleep(wait)

    def _attempt(
        self, request: httpx.Request, counts: RequestCounts | None
    ) -> tuple[httpx.Response | None, str]:
        """One attempt, read to its last byte: the response, or None and what went wrong."""
        limiter = self._limiter
        if limiter is not None:
            limiter.acquire()
        try:
            if counts is not None:
                counts.add("requests")
            sent = time.perf_counter()
            try:
                response = self._wrapped.handle_request(request)
                try:
                    response.read()
                finally:
                    response.close()
            except httpx.TimeoutException as exc:
                return None, f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                return None, f"connection failed ({type(exc).__name__})"
            response.elapsed = timedelta(seconds=time.perf_counter() - sent)
            if self._observe:
                limiter.observe(response.headers)  # type: ignore[union-attr]
            return response, ""
        finally:
            if limiter is not None:
                limiter.release()

    def close(self) -> None:
        self._wrapped.close()


def _describe(request: httpx.Request) -> str:
    return request.extensions.get(DESCRIPTION_EXTENSION) or f"{request.method} {request.url.path}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def network_transport(url: str, limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport for requests to ``url``'s host.

    Through the proxy the environment names for it (``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, ...): an ``httpx.Client`` given a transport of its own no longer
    reads those, so the transport must be told.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and urllib.request.proxy_bypass_environment(parts.netloc, proxies):
        proxy = None
    if proxy and "://" not in proxy:
        proxy = "http://" + proxy
    return httpx.HTTPTransport(verify=_tls(), limits=limits, proxy=proxy or None)


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context (CA bundle loaded once, honouring SSL_CERT_FILE/SSL_CERT_DIR) for
    every transport of the process: the API's and the token endpoint's."""
    return httpx.create_ssl_context()
