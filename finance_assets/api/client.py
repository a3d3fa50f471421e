"""The API's paginated list endpoints: page-number pagination, the page guard, pages ahead.

Knows HTTP and OAuth only (no Dagster, no DuckDB). Pages are yielded as they
arrive, decoded with exact decimals, so no resource is ever held whole in memory.
Auth (``auth.py``) and retries with rate limiting (``transport.py``) are layers of
the ``httpx.Client`` underneath.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from finance_assets.api.auth import RefreshTokenAuth
from finance_assets.api.errors import FinanceApiError
from finance_assets.api.ratelimit import RateLimiter
from finance_assets.api.transport import (
    COUNTS_EXTENSION,
    DESCRIPTION_EXTENSION,
    RequestCounts,
    RetryPolicy,
    RetryTransport,
    network_transport,
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# Pages past the one known to exist are requested ahead only while a page's round trip
# takes longer than this many seconds. Nearer the API, reading a page costs about what
# fetching it does, and more fetching threads only contend for the GIL.
GUESS_AHEAD_AFTER = 0.025


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


class EndpointRead(Iterator[Page]):
    """One pass over an endpoint's pages, which it yields in order.

    ``counts`` is what this pass cost at the API (requests, retries, 429s met, pages),
    apart from any other reads sharing the client. ``close()`` (or reading to the end)
    stops the pages requested ahead; a reader that may stop early closes it.
    """

    def __init__(self, pages: Generator[Page, None, None], counts: RequestCounts) -> None:
        self._pages = pages
        self.counts = counts

    def __next__(self) -> Page:
        return next(self._pages)

    def close(self) -> None:
        self._pages.close()


def _require_https(url: str, setting: str) -> None:
    """Refuse plain http except on loopback, so tokens never cross a network in clear."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FinanceApiError(f"{setting}={url!r} is not an http(s) URL; set it to the API's URL.")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise FinanceApiError(
            f"{setting} uses plain http on {parts.hostname}; use https (plain http is only "
            "allowed on loopback, for the sandbox)."
        )


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
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``rate_limit_per_minute`` caps requests in any 60 s; ``max_in_flight`` caps
        concurrent requests of threads sharing this client; ``pace_by_headers`` spreads
        the budget the API advertises (X-Rate-Limit-*) so a truthful API never says 429.
        ``prefetch_pages`` is how many pages of one endpoint may be requested ahead of
        the consumer (1: strictly one request after the other); pages beyond the one
        known to exist are requested only while round trips take over
        ``guess_ahead_after`` seconds and the advertised limit is ample.
        ``http_transport`` does the network I/O of API and token requests, under the
        retries (default: an ``httpx.HTTPTransport`` per host, through any proxy the
        environment names); the client closes it.
        """
        _require_https(base_url, "FINANCE_API_BASE_URL")
        _require_https(token_url, "FINANCE_API_TOKEN_URL")
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
        self.limiter = RateLimiter(rate_limit_per_minute, max_in_flight, clock=clock, sleep=sleep)
        policy = retry or RetryPolicy()
        timeouts = httpx.Timeout(timeout, connect=connect_timeout)
        # Token requests have a client of their own, without the limiter: the API's
        # rate limit does not count them.
        token_transport = http_transport or network_transport(
            token_url, httpx.Limits(max_connections=2, max_keepalive_connections=1)
        )
        self._token_http = httpx.Client(
            transport=RetryTransport(token_transport, policy, sleep=sleep, clock=clock),
            timeout=timeouts,
            follow_redirects=False,
        )
        self._auth = RefreshTokenAuth(
            token_url, client_id, client_secret, refresh_token, self._token_http, clock=clock
        )
        api_transport = http_transport or network_transport(
            base_url, httpx.Limits(max_connections=32, max_keepalive_connections=32)
        )
        self._http = httpx.Client(
            auth=self._auth,
            transport=RetryTransport(
                api_transport,
                policy,
                limiter=self.limiter,
                pace_by_headers=pace_by_headers,
                sleep=sleep,
                clock=clock,
            ),
            timeout=timeouts,
            follow_redirects=False,
        )

    def __enter__(self) -> FinanceApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._token_http.close()

    def authenticate(self) -> None:
        """Get the access token now, so wrong credentials fail before anything is read.

        Raises AuthError (one sentence) when the token endpoint refuses; otherwise the
        token is cached for every later request of every thread.
        """
        self._auth.authenticate()

    def iter_pages(
        self,
        path: str,
        selector: str,
        modified_since: str | None = None,
        *,
        decode: PageDecoder | None = None,
    ) -> EndpointRead:
        """Read ``page=1, 2, ...`` until a page is the last (see ``Page.is_last``).

        Each page's records are decoded with exact decimals; ``decode``, when given, is
        tried first on each 200 body, in the fetching thread, so decoding overlaps other
        requests.

        The API gives no page count, so a round trip per page would make a large
        resource cost its latency once per page. Once page 1 is full and says there
        is more, up to ``prefetch_pages`` later pages are requested ahead (in worker
        threads, so the limiter, retries and token still apply) and yielded strictly
        in order. Pages past the end are discarded, and so are their errors; a needed
        page's error is raised when its turn comes.
        """
        counts = RequestCounts()

        def fetch(number: int) -> Page:
            return self._get_page(path, selector, number, modified_since, decode, counts)

        return EndpointRead(self._walk(path, fetch), counts)

    def _get_page(
        self,
        path: str,
        selector: str,
        number: int,
        modified_since: str | None,
        decode: PageDecoder | None,
        counts: RequestCounts,
    ) -> Page:
        """GET one page, its requests counted into ``counts``."""
        params: dict[str, Any] = {"page": number, "per_page": self.per_page}
        if modified_since is not None:
            params["modified_since"] = modified_since
        what = f"GET {path} page {number}"
        response = self._http.get(
            self.base_url + path,
            params=params,
            extensions={COUNTS_EXTENSION: counts, DESCRIPTION_EXTENSION: what},
        )
        self._round_trip = response.elapsed.total_seconds()
        date = response.headers.get("Date")
        if decode is not None and response.status_code == 200:
            decoded = decode(response.content)
            if decoded is not None:
                counts.add("pages")
                return Page(number, None, decoded.has_more, date, decoded, per_page=self.per_page)
        body = _json_body(response, what)
        records = body.get(selector)
        if not isinstance(records, list):
            raise FinanceApiError(
                f"{what}: the response has no '{selector}' list (keys: "
                f"{', '.join(sorted(body)[:8])}); check FINANCE_API_BASE_URL and the data selector."
            )
        context = body.get("page_context")
        has_more = bool(context.get("has_more_page")) if isinstance(context, dict) else False
        counts.add("pages")
        return Page(number, records, has_more, date, per_page=self.per_page)

    def _walk(self, path: str, fetch: Callable[[int], Page]) -> Generator[Page, None, None]:
        """Page 1 in this thread (a one-page resource costs one request), then the rest."""
        page = fetch(self._next_number(path, 0))
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

    def _may_request_unconfirmed_pages(self) -> bool:
        """A page not yet known to exist is worth requesting ahead: round trips are slow
        and the rate limiter says the budget is ample."""
        return self._round_trip > self.guess_ahead_after and self.limiter.budget_is_ample()

    def _prefetched(
        self, path: str, first: Page, fetch: Callable[[int], Page]
    ) -> Generator[Page, None, None]:
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

        def request_ahead(pages_in_hand: int, confirmed: int) -> None:
            # Page ``confirmed`` exists (the one before it said has_more_page); pages past
            # it are requested only when unconfirmed pages are worth the risk.
            nonlocal last_asked
            while len(ahead) + pages_in_hand < window and last_asked < self.max_pages:
                if last_asked >= confirmed and not self._may_request_unconfirmed_pages():
                    return
                last_asked += 1
                ahead.append(pool.submit(fetch, last_asked))

        try:
            page = first
            while True:
                if page.is_last:
                    yield page
                    return
                request_ahead(pages_in_hand=1, confirmed=page.number + 1)  # ``page`` counts
                yield page
                request_ahead(pages_in_hand=0, confirmed=page.number + 1)
                if not ahead:  # every page up to max_pages was full and said more
                    self._next_number(path, page.number)
                page = ahead.popleft().result()  # a needed page: its error is raised
        finally:
            for future in ahead:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def _json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    """A success envelope decoded with exact decimals; one clear sentence for anything else."""
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
