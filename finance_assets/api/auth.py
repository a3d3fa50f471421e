"""OAuth2 refresh-token grant as an ``httpx.Auth``: one access token shared by all threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx

from finance_assets.api.errors import AuthError
from finance_assets.api.transport import DESCRIPTION_EXTENSION

# Token endpoint answers that hold for these credentials however often they are sent.
# After one the auth never asks again: providers cap token requests, and some lock a
# client out after repeated refusals.
REFUSALS = {
    "invalid_grant": (
        "the token endpoint refused the refresh token (invalid_grant): it is wrong, "
        "expired or revoked; issue a new one and set FINANCE_API_REFRESH_TOKEN."
    ),
    "invalid_client": (
        "the token endpoint refused the client credentials (invalid_client); check "
        "FINANCE_API_CLIENT_ID and FINANCE_API_CLIENT_SECRET."
    ),
    "unsupported_grant_type": (
        "the token endpoint does not support the refresh_token grant; check that "
        "FINANCE_API_TOKEN_URL is the provider's OAuth token endpoint."
    ),
}


class RefreshTokenAuth(httpx.Auth):
    """OAuth2 refresh-token grant as an httpx auth flow.

    One access token is cached and shared by every request (and thread) until
    shortly before it expires; on a 401 it is refreshed and the request sent again.
    The refresh token is never rotated by this API. Token requests go through
    ``http``, a client of their own: the API's rate limit does not count them.
    A refusal of the refresh token or of the client is final: every later request
    raises the same AuthError at once, without asking the token endpoint again.
    """

    # A 401 on a token another thread just minted may only mean the others used it up
    # (some providers cap uses per token); a 401 on one this request minted is final.
    MAX_REFRESH_ROUNDS = 4

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        http: httpx.Client,
        *,
        clock: Callable[[], float] = time.monotonic,
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
        self._clock = clock
        self._margin = expiry_margin
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._refusal: str | None = None  # the token endpoint's final word, once said

    def authenticate(self) -> None:
        """Have an access token cached (a new one when absent or near expiry), or raise
        AuthError saying why the token endpoint would not give one."""
        self._current()

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

    def _current(self, stale: str | None = None) -> tuple[str, bool]:
        """The token, and whether this call minted it; a new one when absent, near
        expiry or known ``stale``."""
        with self._lock:
            if self._refusal is not None:
                raise AuthError(self._refusal)
            now = self._clock()
            if self._token is None or now >= self._expires_at or self._token == stale:
                self._token, lifetime = self._mint()
                self._expires_at = now + max(0.0, lifetime - self._margin)
                return self._token, True
            return self._token, False

    def _mint(self) -> tuple[str, float]:
        """A new access token and its lifetime in seconds (caller holds the lock)."""
        response = self._http.post(
            self._token_url, data=self._form, extensions={DESCRIPTION_EXTENSION: "token request"}
        )
        if response.status_code != 200:
            refusal = REFUSALS.get(_oauth_error(response) or "")
            if refusal is not None:
                self._refusal = refusal
                raise AuthError(refusal)
            raise AuthError(
                f"the token endpoint answered HTTP {response.status_code}; check "
                "FINANCE_API_TOKEN_URL and the credentials."
            )
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


def _oauth_error(response: httpx.Response) -> str | None:
    """The ``error`` field of an OAuth error body, if it is one."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None
