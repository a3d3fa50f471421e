"""The Dagster resource around the API client: the real API, or the sandbox when chosen."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from pydantic import Field

from finance_assets.api import FinanceApiClient, FinanceApiError, RetryPolicy

CONNECTION_FIELDS = ("base_url", "token_url", "client_id", "client_secret", "refresh_token")


def api_source(base_url: str) -> str:
    """How runs, metadata and the warehouse name an API: its base URL without any
    credentials, query or trailing slash, so no secret rides along and one API has one name."""
    parts = urlsplit(base_url.strip())
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), "", ""))


def sandbox_source(seed: int, scale: float) -> str:
    """How a warehouse records sandbox data: its seed and scale decide every record."""
    return f"sandbox (seed {seed}, scale {scale:g})"


class FinanceApiResource(dg.ConfigurableResource):
    """The financial API (OAuth2 refresh-token grant), or the bundled sandbox API.

    The sandbox is used only when ``use_sandbox`` says so; an API connection lacking any
    of its five settings is refused before a request is sent, so a typo never quietly
    swaps real books for synthetic ones.
    """

    configuration_error: str | None = Field(
        default=None,
        description="Why this deployment's connection cannot run (set when the definitions "
        "load); every run fails at once with it, before any request or write.",
    )
    use_sandbox: bool = Field(
        default=False,
        description="Read the bundled sandbox API (started on a free loopback port per run).",
    )
    base_url: str | None = Field(
        default=None, description="API base URL, e.g. https://api.example.com."
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
        "The next page is always asked ahead; later ones only where round trips are slow "
        "and the API's limit is ample.",
    )
    pace_by_headers: bool = Field(
        default=True,
        description="Spread the budget the API advertises (X-Rate-Limit-Remaining/-Reset) "
        "over the window, so a run never meets a 429 it was warned of.",
    )
    sandbox_seed: int = Field(default=42, description="Sandbox data seed (sandbox only).")
    sandbox_scale: float = Field(
        default=1.0, gt=0, description="Sandbox size; 1 is about 20,000 records (sandbox only)."
    )

    @property
    def source(self) -> str:
        """What this resource reads, as runs, metadata and the warehouse name it: the API's
        base URL, or the sandbox with its seed and scale. Never a credential."""
        if self.configuration_error:
            raise FinanceApiError(self.configuration_error)
        if self.use_sandbox:
            return sandbox_source(self.sandbox_seed, self.sandbox_scale)
        if not self.base_url:
            raise FinanceApiError(self._unconfigured())
        return api_source(self.base_url)

    def _unconfigured(self) -> str:
        missing = [name for name in CONNECTION_FIELDS if not getattr(self, name)]
        return (
            f"the API connection lacks {', '.join(missing)}: set all five settings for the "
            "real API, or choose the sandbox explicitly."
        )

    @contextmanager
    def client(self) -> Iterator[FinanceApiClient]:
        """A client for one run: one access token shared by every asset of the run."""
        if self.use_sandbox:
            from finance_assets.sandbox import Sandbox, SandboxConfig

            config = SandboxConfig(seed=self.sandbox_seed, scale=self.sandbox_scale)
            with Sandbox(config) as sb:
                with self._client(
                    sb.base_url, sb.token_url, sb.client_id, sb.client_secret, sb.refresh_token
                ) as client:
                    yield client
            return
        if not all(getattr(self, name) for name in CONNECTION_FIELDS):
            raise FinanceApiError(self._unconfigured())
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
