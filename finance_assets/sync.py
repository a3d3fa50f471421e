"""One sync pass of one endpoint: pages from the client, validated, into one transaction.

Incremental unless asked for a full refresh or the resource has no cursor yet.
Knows the API's paging and ordering rules (cursor from the server's clock, the key
ranges a page proves complete); nothing of Dagster.
"""

import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pyarrow as pa
import pyarrow.compute as pc

from finance_assets.api import FinanceApiClient, Page
from finance_assets.endpoints import Endpoint
from finance_assets.records import columnar
from finance_assets.records.page_columns import PageColumns, ValueDoesNotFit, columns_from_records
from finance_assets.records.validation import validate_page
from finance_assets.warehouse import (
    FULL_REFRESH,
    HIGHEST_KEY,
    INCREMENTAL,
    LOWEST_KEY,
    Warehouse,
    WriteStats,
    order_key,
)

DEFAULT_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class LoadReport:
    """What loading one endpoint did, for the materialization's metadata."""

    mode: str
    cursor_used: datetime | None
    cursor_new: datetime
    records_fetched: int
    stats: WriteStats
    pages: int
    requests: int
    retries: int
    rate_limited: int
    seconds: float


def _server_clock(page: Page, fallback: datetime) -> datetime:
    """The response's ``Date`` (server clock), or our own clock if it has none."""
    try:
        return parsedate_to_datetime(page.server_date) if page.server_date else fallback
    except (TypeError, ValueError):
        return fallback


def _api_time(instant: datetime) -> str:
    """RFC 3339 in UTC, whole seconds rounded down (an earlier cursor is always safe)."""
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_range(page: PageColumns) -> tuple[str, str] | None:
    """Lowest and highest order key of the page's loaded records (None: no created_time).

    Only the rows at the earliest and latest instant are keyed in Python.
    """
    table = page.parent
    times = table.column("created_time")
    ends = pc.min_max(times)
    if not ends["min"].is_valid:
        return None

    def keys_at(instant: pa.Scalar) -> list[str]:
        ids = table.column("id").filter(pc.equal(times, instant)).to_pylist()
        return [order_key(instant.as_py(), i) for i in ids]

    return min(keys_at(ends["min"])), max(keys_at(ends["max"]))


def _seen_range(page: Page, loaded: PageColumns) -> tuple[str, str] | None:
    """The order-key range a page proves complete: it was a contiguous slice when served.

    Page 1 reaches down to the start of the list and the last non-empty page up to its
    end; an empty page 1 proves the list empty. An empty later page proves nothing
    (a deletion may have shifted its first record onto a page already read).
    """
    if not page.size:
        return (LOWEST_KEY, HIGHEST_KEY) if page.number == 1 else None
    keys = key_range(loaded)
    if keys is None:
        return None
    low = LOWEST_KEY if page.number == 1 else keys[0]
    high = HIGHEST_KEY if not page.has_more else keys[1]
    return low, high


def load_endpoint(
    client: FinanceApiClient,
    warehouse: Warehouse,
    endpoint: Endpoint,
    full_refresh: bool = False,
    margin: timedelta = DEFAULT_MARGIN,
) -> LoadReport:
    """Stream an endpoint's pages through validation into one warehouse transaction.

    The new cursor is the server's clock at the first response less ``margin``: a
    record changed during the pass gets a later ``last_modified_time``, so the next
    pass reads it; the newest timestamp seen could step past it for good.
    """
    started = time.perf_counter()
    loaded_at = datetime.now(timezone.utc)
    cursor_used = None if full_refresh else warehouse.sync_cursor(endpoint)
    full = cursor_used is None
    since = _api_time(cursor_used) if cursor_used else None
    fetched = loaded_pages = 0
    pass_began: datetime | None = None
    with (
        warehouse.writer(endpoint, loaded_at, full_refresh=full) as writer,
        closing(  # on any exit: no page is fetched ahead for a pass that failed
            client.iter_pages(
                endpoint.path,
                endpoint.data_selector,
                since,
                decode=columnar.reader_for_pass(endpoint),
            )
        ) as pages,
    ):
        for page in pages:
            loaded_pages += 1  # (requests also count pages guessed past the end)
            if pass_began is None:
                pass_began = _server_clock(page, loaded_at)
            if page.decoded is not None:  # already validated columns
                loaded = page.decoded.columns
            else:
                valid, bad = validate_page(endpoint.model, page.records or [], decimal_digits=False)
                try:
                    loaded = columns_from_records(endpoint, valid)
                except ValueDoesNotFit:  # a decimal past its column: validate with the bounds
                    valid, bad = validate_page(endpoint.model, page.records or [])
                    loaded = columns_from_records(endpoint, valid)
                writer.reject(bad)
            writer.add(loaded)
            fetched += page.size
            if full:
                seen = _seen_range(page, loaded)
                if seen:
                    writer.seen_range(*seen)
        cursor_new = (pass_began or loaded_at) - margin
        writer.set_cursor(cursor_new)
    counts = pages.counts  # this endpoint's requests, while others share the client
    return LoadReport(
        mode=FULL_REFRESH if full else INCREMENTAL,
        cursor_used=cursor_used,
        cursor_new=cursor_new,
        records_fetched=fetched,
        stats=writer.stats,
        pages=loaded_pages,
        requests=counts.requests,
        retries=counts.retries,
        rate_limited=counts.rate_limited,
        seconds=time.perf_counter() - started,
    )
