"""The Dagster resource around the API client: the real API, or the sandbox when chosen."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from pydantic import Field

from finance_assets.api import FinanceApiClient, FinanceApiError, RetryPolicy
from finance_assets.schema import DEFAULT_ORGANIZATION

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


class OrganizationConnection(dg.Config):
    """One declared organization as a run reaches it: its API by URL with its secrets named
    by environment variable (read when a run starts), or a sandbox of its own."""

    key: str = Field(description="The organization's key: its partition.")
    base_url: str | None = Field(default=None, description="API base URL.")
    token_url: str | None = Field(default=None, description="OAuth2 token URL.")
    client_id_env: str | None = Field(default=None, description="Variable with the client id.")
    client_secret_env: str | None = Field(default=None, description="Variable with the secret.")
    refresh_token_env: str | None = Field(
        default=None, description="Variable with the refresh token."
    )
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="Cap on this organization's requests per minute."
    )
    use_sandbox: bool = Field(default=False, description="Served by a sandbox of its own.")
    sandbox_seed: int = Field(default=42, description="Sandbox data seed (sandbox only).")
    sandbox_scale: float = Field(default=1.0, gt=0, description="Sandbox size (sandbox only).")
    sandbox_rate_limit_per_minute: int | None = Field(
        default=None, description="The limit the sandbox enforces (sandbox only)."
    )

    @property
    def source(self) -> str:
        if self.use_sandbox:
            return sandbox_source(self.sandbox_seed, self.sandbox_scale)
        return api_source(self.base_url or "")

    def in_own_words(self, message: str) -> str:
        """A client's sentence about the one connection, retold with this organization's
        own variables and settings, and its key in front."""
        own = {
            "FINANCE_API_REFRESH_TOKEN": self.refresh_token_env,
            "FINANCE_API_CLIENT_SECRET": self.client_secret_env,
            "FINANCE_API_CLIENT_ID": self.client_id_env,
            "FINANCE_API_BASE_URL": f"the base_url of organization {self.key}",
            "FINANCE_API_TOKEN_URL": f"the token_url of organization {self.key}",
        }
        for generic, name in own.items():
            message = message.replace(generic, name or generic)
        prefix = f"organization {self.key}: "
        return message if message.startswith(prefix) else prefix + message

    def secrets(self) -> tuple[str, str, str]:
        """Client id, secret and refresh token from their variables, read now; a missing
        one fails this organization alone, in one sentence naming the variable."""
        named = {
            "client id": self.client_id_env,
            "client secret": self.client_secret_env,
            "refresh token": self.refresh_token_env,
        }
        unset = [
            f"{env} (its {what})" for what, env in named.items() if not os.environ.get(env or "")
        ]
        if unset:
            raise FinanceApiError(
                f"organization {self.key}: {', '.join(unset)} {'is' if len(unset) == 1 else 'are'} "
                "not set; set it in the environment of the runs, or remove the organization."
            )
        client_id, secret, refresh = (os.environ[env or ""] for env in named.values())
        return client_id, secret, refresh


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
    organizations: list[OrganizationConnection] = Field(
        default_factory=list,
        description="The declared organizations, each its own connection; empty: the one "
        "connection above is the organization `default`.",
    )

    @property
    def organization_keys(self) -> list[str]:
        """The organizations runs can sync: the declared ones, else ``default``."""
        return [o.key for o in self.organizations] or [DEFAULT_ORGANIZATION]

    def _organization(self, key: str) -> OrganizationConnection | None:
        if not self.organizations and key == DEFAULT_ORGANIZATION:
            return None
        for organization in self.organizations:
            if organization.key == key:
                return organization
        raise FinanceApiError(
            f"no organization {key!r} is declared; declared: {', '.join(self.organization_keys)}."
        )

    def explain(self, organization: str, message: str) -> str:
        """``message`` as the organization's runs should say it (unchanged for ``default``)."""
        declared = self._organization(organization)
        return message if declared is None else declared.in_own_words(message)

    def source_of(self, organization: str) -> str:
        """What ``organization``'s runs read, as runs, metadata and the warehouse name it."""
        declared = self._organization(organization)
        if self.configuration_error:
            raise FinanceApiError(self.configuration_error)
        return self.source if declared is None else declared.source

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
    def client(self, organization: str = DEFAULT_ORGANIZATION) -> Iterator[FinanceApiClient]:
        """A client of one organization for one run: one access token shared by every
        asset of the run, and the organization's own rate limit."""
        declared = self._organization(organization)
        if declared is not None:
            with self._organization_client(declared) as client:
                yield client
            return
        if self.configuration_error:
            raise FinanceApiError(self.configuration_error)
        if self.use_sandbox:
            with self._sandbox_client(self.sandbox_seed, self.sandbox_scale, None) as client:
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

    @contextmanager
    def _organization_client(self, org: OrganizationConnection) -> Iterator[FinanceApiClient]:
        if org.use_sandbox:
            with self._sandbox_client(
                org.sandbox_seed, org.sandbox_scale, org.sandbox_rate_limit_per_minute,
                org.rate_limit_per_minute,
            ) as client:  # fmt: skip
                yield client
            return
        assert org.base_url and org.token_url
        client_id, secret, refresh = org.secrets()
        with self._client(
            org.base_url, org.token_url, client_id, secret, refresh, org.rate_limit_per_minute
        ) as client:
            yield client

    @contextmanager
    def _sandbox_client(
        self, seed: int, scale: float, enforced: int | None, cap: int | None = None
    ) -> Iterator[FinanceApiClient]:
        from finance_assets.sandbox import Sandbox, SandboxConfig

        with Sandbox(SandboxConfig(seed=seed, scale=scale, rate_limit=enforced)) as sb:
            with self._client(
                sb.base_url, sb.token_url, sb.client_id, sb.client_secret, sb.refresh_token,
                cap or self.rate_limit_per_minute,
            ) as client:  # fmt: skip
                yield client

    def _client(
        self,
        base_url: str,
        token_url: str,
        client_id: str,
        secret: str,
        refresh: str,
        rate_limit_per_minute: int | None = None,
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
            rate_limit_per_minute=rate_limit_per_minute or self.rate_limit_per_minute,
            max_in_flight=self.max_in_flight,
            pace_by_headers=self.pace_by_headers,
            prefetch_pages=self.prefetch_pages,
        )
