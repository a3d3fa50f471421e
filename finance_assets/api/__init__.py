"""Client of the financial API: OAuth2 refresh-token auth, retries, rate limiting, pages."""

from finance_assets.api.client import (
    GUESS_AHEAD_AFTER,
    AuthError,
    ClientStats,
    FinanceApiClient,
    FinanceApiError,
    Page,
    RetryPolicy,
)
from finance_assets.api.ratelimit import RateLimiter

__all__ = [
    "GUESS_AHEAD_AFTER",
    "AuthError",
    "ClientStats",
    "FinanceApiClient",
    "FinanceApiError",
    "Page",
    "RateLimiter",
    "RetryPolicy",
]
