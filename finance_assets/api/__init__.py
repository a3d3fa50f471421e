"""Client of the financial API: OAuth2 refresh-token auth, retries and rate limiting as
httpx layers, and page-number pagination with pages requested ahead.

Modules: ``errors`` (what the client raises), ``auth`` (the refresh-token ``httpx.Auth``),
``ratelimit`` (the run's shared limiter), ``transport`` (retries and rate limiting as an
``httpx`` transport) and ``client`` (pages).
"""

from finance_assets.api.auth import RefreshTokenAuth
from finance_assets.api.client import (
    GUESS_AHEAD_AFTER,
    DecodedPage,
    EndpointRead,
    FinanceApiClient,
    Page,
    PageDecoder,
)
from finance_assets.api.errors import AuthError, FinanceApiError
from finance_assets.api.ratelimit import RateLimiter
from finance_assets.api.transport import RequestCounts, RetryPolicy, RetryTransport

__all__ = [
    "GUESS_AHEAD_AFTER",
    "AuthError",
    "DecodedPage",
    "EndpointRead",
    "FinanceApiClient",
    "FinanceApiError",
    "Page",
    "PageDecoder",
    "RateLimiter",
    "RefreshTokenAuth",
    "RequestCounts",
    "RetryPolicy",
    "RetryTransport",
]
