"""HTTP client of the financial API: OAuth2 refresh-token auth, retries, pagination.

Knows HTTP and OAuth only (no Dagster, no DuckDB). Pages are yielded as they
arrive, decoded with exact decimals, so no resource is ever held whole in memory.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from finance_assets.api.ratelimit import RateLimiter

# httpx logs every request URL at INFO; keep that noise (and anything token-shaped) out of run logs.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class FinanceApiError(RuntimeError):
    """A failure the client cannot recover from; the message is one actionable sentence."""


class AuthError(FinanceApiError):
    """The token endpoint refused the credentials or answered nonsense."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying transient failures (429, 5xx, connection errors, timeouts)."""

    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_elapsed: float = 300.0  # total seconds one request may spend retrying
    max_retry_after: float = 120.0  # a longer Retry-After fails fast instead of hanging


@dataclass
class ClientStats:
    """What the client did, for materialization metadata."""

    requests: int = 0
    pages: int = 0
    retries: int = 0
    rate_limited: int = 0
    token_requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}


class DecodedPage(Protocol):
    """What a page decoder makes of a body it vouches for (opaque to the client)."""

    @property
    def size(self) -> int: ...  # records under the data selector
    @property
    def has_more(self) -> bool: ...


# A decoder given the raw 200 body; None when it cannot vouch for it (the client then
# decodes the body itself, with exact decimals, and explains any problem).
PageDecoder = Callable[[bytes], "DecodedPage | None"]


@dataclass(frozen=True)
class Page:
    """One page under the data selector, with the server's clock.

    ``records`` are the decoded records, or None when the read's decoder took the
    body (its product is ``decoded``). ``per_page`` is the page size asked for.
    """

    number: int
    records: list[dict[str, Any]] | None
    has_more: bool
    server_date: str | None  # the response's Date header (server clock)
    decoded: DecodedPage | None = None
    per_page: int = field(kw_only=True)

    @property
    def size(self) -> int:
        """Records on the page."""
        return self.decoded.size if self.decoded is not None else len(self.records or ())

    @property
    def is_last(self) -> bool:
        """The client's stop rule: the page says no more, or is short (empty included)."""
        return not self.has_more or self.size < self.per_page


def check_transport(url: str, setting: str) -> None:
    """Refuse plain http except on loopback, so tokens never cross a network in clear."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FinanceApiError(f"{setting}={url!r} is not an http(s) URL; set it to the API's URL.")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise FinanceApiError(
            f"{setting} uses plain http on {parts.hostname}; use https (plain http is only "
            "allowed on loopback, for the sandbox)."
        )


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


class RetryingTransport:
    """Sends one request with bounded, jittered exponential backoff on transient failures."""

    def __init__(
        self,
        policy: RetryPolicy,
        stats: ClientStats,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.stats = stats
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter in [0.5, 1.0] of the step."""
        step = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempt - 1))
        return step * self.rng.uniform(0.5, 1.0)

    def send(
        self,
        what: str,
        do: Callable[[], httpx.Response],
        counter: str = "requests",
        limiter: RateLimiter | None = None,
        observe: bool = False,
        stats: ClientStats | None = None,
    ) -> httpx.Response:
        """Call ``do`` until it yields a non-retryable response or the bounds are hit.

        With a ``limiter`` each attempt waits for its turn and holds an in-flight
        slot while it runs (never while backing off); ``observe`` feeds it the
        response's rate-limit headers. Token requests pass no limiter (the contract
        does not count them).
        """
        sinks = (self.stats,) if stats is None else (self.stats, stats)

        def count(name: str) -> None:
            for sink in sinks:
                sink.add(**{name: 1})

        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            if limiter is not None:
                limiter.acquire()
            count(counter)
            try:
                response = do()
            except httpx.TimeoutException as exc:
                problem, wait, response = f"timed out ({type(exc).__name__})", None, None
            except httpx.TransportError as exc:
                problem, wait, response = f"connection failed ({type(exc).__name__})", None, None
            else:
                if limiter is not None and observe:
                    limiter.observe(response.headers)
            finally:
                if limiter is not None:
                    limiter.release()
            if response is not None:
                if response.status_code not in RETRY_STATUSES:
                    return response
                problem, wait = f"HTTP {response.status_code}", None
                if response.status_code == 429:
                    count("rate_limited")
                    wait = _retry_after(response)
                    if wait is not None and wait > self.policy.max_retry_after:
                        raise FinanceApiError(
                            f"{what}: rate limited with Retry-After {wait:.0f}s, longer than the "
                            f"{self.policy.max_retry_after:.0f}s allowed; the daily quota may be "
                            "spent, try again later."
                        )
            if wait is None:
                wait = self.backoff(attempt)
            elapsed = self.clock() - started
            if attempt >= self.policy.max_attempts or elapsed + wait > self.policy.max_elapsed:
                raise FinanceApiError(
                    f"{what}: gave up after {attempt} attempts in {elapsed:.0f}s, last error "
                    f"{problem}; the API is failing or unreachable, check its status and the URL."
                )
            count("retries")
            if limiter is not None and response is not None and response.status_code == 429:
                limiter.wait_after_429(wait)  # this thread sleeps; the others are held
            else:
                self.sleep(wait)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class RefreshTokenAuth(httpx.Auth):
    """OAuth2 refresh-token grant as an httpx auth flow.

    One access token is cached and shared by every request (and thread) until
    shortly before it expires; on a 401 it is refreshed once and the request
    retried once. The refresh token is never rotated by this API.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        http: httpx.Client,
        transport: RetryingTransport,
        expiry_margin: float = 60.0,
    ) -> None:
        self._token_url = token_url
        self._form = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        }
        self._http = http
        self._transport = transport
        self._margin = expiry_margin
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    # A 401 on a token another thread just minted may only mean the others used it up
    # (some providers cap uses per token); a 401 on one this request minted is final.
    MAX_REFRESH_ROUNDS = 4

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        token, _ = self._current()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        for _ in range(self.MAX_REFRESH_ROUNDS):
            if response.status_code != 401:
                return
            token, minted_here = self._current(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code == 401 and minted_here:
                break
        if response.status_code == 401:
            raise AuthError(
                f"GET {request.url.path}: the API rejected a freshly issued access token "
                "(401); check that FINANCE_API_TOKEN_URL and FINANCE_API_BASE_URL belong "
                "to the same provider and that the client may read this resource."
            )

    def token(self, stale: str | None = None) -> str:
        """The cached access token; a new one when absent, near expiry or known ``stale``."""
        return self._current(stale)[0]

    def _current(self, stale: str | None = None) -> tuple[str, bool]:
        """The token, and whether this call minted it."""
        with self._lock:
            now = self._transport.clock()
            if self._token is None or now >= self._expires_at or self._token == stale:
                self._token, lifetime = self._mint()
                self._expires_at = now + max(0.0, lifetime - self._margin)
                return self._token, True
            return self._token, False

    def _mint(self) -> tuple[str, float]:
        response = self._transport.send(
            "token request",
            lambda: self._http.post(self._token_url, data=self._form),
            counter="token_requests",
        )
        if response.status_code != 200:
            raise AuthError(self._describe_refusal(response))
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"the token endpoint answered HTTP {response.status_code} without an "
                "access_token; check that FINANCE_API_TOKEN_URL is the OAuth token endpoint."
            )
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else 3600.0
        return token, lifetime

    def _describe_refusal(self, response: httpx.Response) -> str:
        error = _oauth_error(response)
        status = response.status_code
        if error == "invalid_grant":
            return (
                "the token endpoint refused the refresh token (invalid_grant): it is wrong, "
                "expired or revoked; issue a new one and set FINANCE_API_REFRESH_TOKEN."
            )
        if error == "invalid_client":
            return (
                "the token endpoint refused the client credentials (invalid_client); check "
                "FINANCE_API_CLIENT_ID and FINANCE_API_CLIENT_SECRET."
            )
        if error == "unsupported_grant_type":
            return (
                "the token endpoint does not support the refresh_token grant; check that "
                "FINANCE_API_TOKEN_URL is the provider's OAuth token endpoint."
            )
        return (
            f"the token endpoint answered HTTP {status}; check FINANCE_API_TOKEN_URL "
            "and the credentials."
        )


# Pages past the known next one are guessed only while a page's round trip takes longer
# than this. Nearer, reading a page costs about what fetching it does, and more fetching
# threads only trade the GIL: on localhost at scale 5, guessing doubled the context
# switches and slowed the load step by a fifth to a third.
GUESS_AHEAD_AFTER = 0.025


class FinanceApiClient:
    """Reads the API's paginated list endpoints with one shared access token."""

    def __init__(
        self,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        *,
        per_page: int = 200,
        max_pages: int = 100_000,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rate_limit_per_minute: int | None = None,
        max_in_flight: int = 8,
        pace_by_headers: bool = True,
        prefetch_pages: int = 4,
        guess_ahead_after: float = GUESS_AHEAD_AFTER,
    ) -> None:
        """``rate_limit_per_minute`` caps requests in any 60 s; ``max_in_flight`` caps
        concurrent requests of threads sharing this client; ``pace_by_headers`` spreads
        the budget the API advertises (X-Rate-Limit-*) so a truthful API never says 429.
        ``prefetch_pages`` is how many pages of one endpoint may be requested ahead of
        the consumer (1: strictly one request after the other); pages beyond the one
        known to exist are guessed only while round trips take over ``guess_ahead_after``
        seconds (and requests are cheap, see ``RateLimiter.budget_is_ample``).
        """
        check_transport(base_url, "FINANCE_API_BASE_URL")
        check_transport(token_url, "FINANCE_API_TOKEN_URL")
        if not 1 <= per_page <= 200:
            raise FinanceApiError(f"per_page={per_page} is outside 1..200; use at most 200.")
        if prefetch_pages < 1:
            raise FinanceApiError(
                f"prefetch_pages={prefetch_pages} is below 1; use 1 to fetch pages one by one."
            )
        self.base_url = base_url.rstrip("/")
        self.per_page = per_page
        self.max_pages = max_pages
        self.prefetch_pages = prefetch_pages
        self.guess_ahead_after = guess_ahead_after
        self._round_trip = 0.0  # seconds the latest page took, request to last byte
        self.stats = ClientStats()
        self.transport = RetryingTransport(retry or RetryPolicy(), self.stats, sleep, clock)
        self.pace_by_headers = pace_by_headers
        self.limiter = RateLimiter(
            rate_limit_per_minute, max_in_flight, clock=clock, sleep=sleep
        )
        timeouts = httpx.Timeout(timeout, connect=connect_timeout)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        self._http = httpx.Client(timeout=timeouts, limits=limits, follow_redirects=False)
        self.auth = RefreshTokenAuth(
            token_url, client_id, client_secret, refresh_token, self._http, self.transport
        )

    def __enter__(self) -> FinanceApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get_page(
        self,
        path: str,
        selector: str,
        page: int,
        modified_since: str | None = None,
        stats: ClientStats | None = None,
        decode: PageDecoder | None = None,
    ) -> Page:
        """GET one page and return its records, decoded with exact decimals.

        ``stats``, when given, counts this call too (per-endpoint figures while
        several endpoints share the client). ``decode``, when given, is tried first on
        a 200 body (in this thread, so decoding overlaps other requests).
        """
        params: dict[str, Any] = {"page": page, "per_page": self.per_page}
        if modified_since is not None:
            params["modified_since"] = modified_since
        url = self.base_url + path
        what = f"GET {path} page {page}"
        response = self.transport.send(
            what,
            lambda: self._http.get(url, params=params, auth=self.auth),
            limiter=self.limiter,
            observe=self.pace_by_headers,
            stats=stats,
        )
        self._round_trip = response.elapsed.total_seconds()
        sinks = (self.stats,) if stats is None else (self.stats, stats)
        date = response.headers.get("Date")
        if decode is not None and response.status_code == 200:
            decoded = decode(response.content)
            if decoded is not None:
                for sink in sinks:
                    sink.add(pages=1)
                return Page(page, None, decoded.has_more, date, decoded, per_page=self.per_page)
        body = _decode(response, what)
        records = body.get(selector)
        if not isinstance(records, list):
            raise FinanceApiError(
                f"{what}: the response has no '{selector}' list (keys: "
                f"{', '.join(sorted(body)[:8])}); check FINANCE_API_BASE_URL and the data selector."
            )
        context = body.get("page_context")
        has_more = bool(context.get("has_more_page")) if isinstance(context, dict) else False
        for sink in sinks:
            sink.add(pages=1)
        return Page(page, records, has_more, date, per_page=self.per_page)

    def iter_pages(
        self,
        path: str,
        selector: str,
        modified_since: str | None = None,
        stats: ClientStats | None = None,
        decode: PageDecoder | None = None,
    ) -> Iterator[Page]:
        """Walk ``page=1, 2, ...`` until a page is the last (see ``Page.is_last``).

        The API gives no page count, so a round trip per page would make a large
        resource cost its latency once per page. Once page 1 is full and says there
        is more, up to ``prefetch_pages`` later pages are requested ahead (in worker
        threads, through ``get_page``, so the limiter, retries and token still apply)
        and yielded strictly in order. Pages past the end are discarded, and so are
        their errors; a needed page's error is raised when its turn comes.
        """

        def fetch(number: int) -> Page:
            return self.get_page(path, selector, number, modified_since, stats, decode)

        page = fetch(self._next_number(path, 0))  # here: a one-page resource costs one request
        if page.is_last or self.prefetch_pages <= 1:
            yield page
            while not page.is_last:
                page = fetch(self._next_number(path, page.number))
                yield page
            return
        yield from self._prefetched(path, page, fetch)

    def _next_number(self, path: str, number: int) -> int:
        """The page after ``number``, unless that would pass the ``max_pages`` guard."""
        if number >= self.max_pages:
            raise FinanceApiError(
                f"GET {path}: still more pages after {self.max_pages}; the API never says "
                "has_more_page: false. Raise max_pages if the resource really is that large."
            )
        return number + 1

    def _guessing_pays(self) -> bool:
        """A page that may not exist is worth asking for: round trips are slow and the
        limiter says requests are cheap."""
        return self._round_trip > self.guess_ahead_after and self.limiter.budget_is_ample()

    def _prefetched(self, path: str, first: Page, fetch: Callable[[int], Page]) -> Iterator[Page]:
        """Yield ``first`` and the pages after it, keeping requests ahead of the consumer.

        At most ``prefetch_pages`` pages are requested or held and not yet yielded, so
        memory stays bounded and at most ``prefetch_pages - 1`` requests are wasted past
        the end. The pool is this call's own: on any exit (last page, error, consumer
        gone) requests not started are cancelled and running ones awaited, so no
        request outlives the generator.
        """
        window = self.prefetch_pages
        pool = ThreadPoolExecutor(max_workers=window, thread_name_prefix="finance-prefetch")
        ahead: deque[Future[Page]] = deque()  # pages last_asked - len(ahead) + 1 .. last_asked
        last_asked = first.number

        def top_up(held: int, known: int) -> None:
            # Page ``known`` exists (the one before it said so); later ones are a guess.
            nonlocal last_asked
            while len(ahead) + held < window and last_asked < self.max_pages:
                if last_asked >= known and not self._guessing_pays():
                    return
                last_asked += 1
                ahead.append(pool.submit(fetch, last_asked))

        try:
            page = first
            while True:
                if page.is_last:
                    yield page
                    return
                top_up(held=1, known=page.number + 1)  # ``page`` counts until taken
                yield page
                top_up(held=0, known=page.number + 1)
                if not ahead:  # every page up to max_pages was full and said more
                    self._next_number(path, page.number)
                page = ahead.popleft().result()  # a needed page: its error is raised
        finally:
            for future in ahead:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def _decode(response: httpx.Response, what: str) -> dict[str, Any]:
    """Decode a response body, raising one clear sentence for every non-success."""
    status = response.status_code
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    detail = f" (code {code}: {message})" if code is not None else ""
    if status == 400:
        raise FinanceApiError(f"{what}: the API refused the request parameters{detail}.")
    if status == 404:
        raise FinanceApiError(
            f"{what}: not found (404){detail}; check FINANCE_API_BASE_URL (it should not "
            "include /v1)."
        )
    if status != 200:
        raise FinanceApiError(f"{what}: unexpected HTTP {status}{detail}.")
    if not isinstance(body, dict):
        raise FinanceApiError(
            f"{what}: the response body is not a JSON object; check FINANCE_API_BASE_URL."
        )
    if code != 0:
        raise FinanceApiError(
            f"{what}: the API answered with error{detail}; check that message, the API's "
            "status and that the client may read this resource."
        )
    return body
