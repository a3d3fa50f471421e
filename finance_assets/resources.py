"""Dagster resource around the API client, with the embedded sandbox as the default."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from finance_assets.api import FinanceApiClient, FinanceApiError, RetryPolicy

RATE_LIMIT_ENV_VAR = "FINANCE_API_RATE_LIMIT_PER_MINUTE"  # optional; not a secret
API_ENV_VARS = (
    "FINANCE_API_BASE_URL",
    "FINANCE_API_TOKEN_URL",
    "FINANCE_API_CLIENT_ID",
    "FINANCE_API_CLIENT_SECRET",
    "FINANCE_API_REFRESH_TOKEN",
)


class FinanceApiResource(dg.ConfigurableResource):
    """The financial API (OAuth2 refresh-token grant).

    With ``base_url`` unset, each run starts the bundled sandbox API on a free
    loopback port and reads from it, so the project works without credentials.
    """

    base_url: str | None = Field(
        default=None, description="API base URL, e.g. https://api.example.com (unset: sandbox)."
    )
    token_url: str | None = Field(default=None, description="Full OAuth2 token URL.")
    client_id: str | None = Field(default=None, description="OAuth2 client id.")
    client_secret: str | None = Field(default=None, description="OAuth2 client secret.")
    refresh_token: str | None = Field(default=None, description="OAuth2 refresh token.")
    per_page: int = Field(default=200, ge=1, le=200, description="Records per page (max 200).")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Read timeout per request.")
    max_attempts: int = Field(
        default=8, ge=1, description="Attempts per request (429/5xx/network)."
    )
    max_retry_seconds: float = Field(
        default=300.0, gt=0, description="Most time one request may spend retrying."
    )
    backoff_base_seconds: float = Field(
        default=0.5, gt=0, description="First retry wait; doubles per attempt, with jitter."
    )
    backoff_max_seconds: float = Field(default=30.0, gt=0, description="Longest retry wait.")
    max_retry_after_seconds: float = Field(
        default=120.0, gt=0, description="A longer Retry-After fails fast instead of hanging."
    )
    max_pages: int = Field(default=100_000, ge=1, description="Guard against endless pagination.")
    rate_limit_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Cap on API requests in any 60 s, across all endpoints of a run "
        "(unset: only what the API advertises in X-Rate-Limit-* headers).",
    )
    max_in_flight: int = Field(default=8, ge=1, description="Concurrent API requests at most.")
    prefetch_pages: int = Field(
        default=4,
        ge=1,
        description="Pages of one endpoint requested ahead of the one being loaded, so a "
        "large resource does not wait one round trip per page (1: one page at a time). "
        "The next page is always asked ahead; pages past it only where a round trip takes "
        "over 25 ms and the API's limit is ample.",
    )
    pace_by_headers: bool = Field(
        default=True,
        description="Spread the budget the API advertises (X-Rate-Limit-Remaining/-Reset) "
        "over the window, so a run never meets a 429 it was warned of.",
    )
    sandbox_seed: int = Field(default=42, description="Sandbox data seed (sandbox mode only).")
    sandbox_scale: float = Field(
        default=1.0, gt=0, description="Sandbox size; 1 is about 20,000 records (sandbox only)."
    )

    @property
    def uses_sandbox(self) -> bool:
        return not self.base_url

    @contextmanager
    def client(self) -> Iterator[FinanceApiClient]:
        """A client for one run: one access token shared by every asset of the run."""
        if self.uses_sandbox:
            from finance_assets.sandbox import Sandbox, SandboxConfig

            with Sandbox(SandboxConfig(seed=self.sandbox_seed, scale=self.sandbox_scale)) as sb:
                with self._client(
                    sb.base_url, sb.token_url, sb.client_id, sb.client_secret, sb.refresh_token
                ) as client:
                    yield client
            return
        missing = [
            name
            for name, value in zip(
                API_ENV_VARS[1:],
                (self.token_url, self.client_id, self.client_secret, self.refresh_token),
                strict=True,
            )
            if not value
        ]
        if missing:
            raise FinanceApiError(f"the API is configured but {', '.join(missing)} unset.")
        assert self.base_url and self.token_url and self.client_id
        assert self.client_secret and self.refresh_token
        with self._client(
            self.base_url, self.token_url, self.client_id, self.client_secret, self.refresh_token
        ) as client:
            yield client

    def _client(
        self, base_url: str, token_url: str, client_id: str, secret: str, refresh: str
    ) -> FinanceApiClient:
        return FinanceApiClient(
            base_url,
            token_url,
            client_id,
            secret,
            refresh,
            per_page=self.per_page,
            max_pages=self.max_pages,
            timeout=self.timeout_seconds,
            retry=RetryPolicy(
                max_attempts=self.max_attempts,
                backoff_base=self.backoff_base_seconds,
                backoff_max=self.backoff_max_seconds,
                max_elapsed=self.max_retry_seconds,
                max_retry_after=self.max_retry_after_seconds,
            ),
            rate_limit_per_minute=self.rate_limit_per_minute,
            max_in_flight=self.max_in_flight,
            pace_by_headers=self.pace_by_headers,
            prefetch_pages=self.prefetch_pages,
        )


def api_resource_from_env() -> FinanceApiResource:
    """The real API when ``FINANCE_API_BASE_URL`` is set (through ``dg.EnvVar``), else sandbox."""
    if not os.getenv("FINANCE_API_BASE_URL"):
        return FinanceApiResource()
    base, token, cid, secret, refresh = (dg.EnvVar(name) for name in API_ENV_VARS)
    rate_limit = os.getenv(RATE_LIMIT_ENV_VAR)
    return FinanceApiResource(
        base_url=base,
        token_url=token,
        client_id=cid,
        client_secret=secret,
        refresh_token=refresh,
        rate_limit_per_minute=int(rate_limit) if rate_limit else None,
    )
