"""The errors the API client raises: each message is one actionable sentence."""

from __future__ import annotations


class FinanceApiError(RuntimeError):
    """A failure the client cannot recover from; the message is one actionable sentence."""


class AuthError(FinanceApiError):
    """The token endpoint refused the credentials or answered nonsense."""
