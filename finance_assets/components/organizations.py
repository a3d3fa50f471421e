"""The organizations a deployment syncs, declared as data: one set of books each, with its
own connection, credentials (named by environment variable, never written), rate limit
and sandbox. Declared, they become the partitions of the finance assets."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import dagster as dg
import yaml
from pydantic import Field, model_validator

from finance_assets.components.connection import ConfigurationError

KEY_PATTERN = r"^[a-z][a-z0-9_]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SandboxBooks(dg.Model, dg.Resolvable):
    """An organization served by the bundled sandbox API (a server of its own per run)."""

    seed: int = Field(default=42, description="Data seed: the same seed, the same records.")
    scale: float = Field(default=1.0, gt=0, description="Size; 1 is about 20,000 records.")
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="The limit the sandbox enforces and advertises."
    )


class Organization(dg.Model, dg.Resolvable):
    """One organization: its key (the partition), and either the real API's connection
    with the names of the variables holding its secrets, or a sandbox."""

    key: str = Field(pattern=KEY_PATTERN, description="Short name, e.g. `acme`: the partition.")
    base_url: str | None = Field(default=None, description="The API base URL (its region).")
    token_url: str | None = Field(default=None, description="The OAuth2 token URL.")
    client_id_env: str | None = Field(
        default=None, pattern=ENV_NAME_PATTERN, description="Variable holding the client id."
    )
    client_secret_env: str | None = Field(
        default=None, pattern=ENV_NAME_PATTERN, description="Variable holding the secret."
    )
    refresh_token_env: str | None = Field(
        default=None, pattern=ENV_NAME_PATTERN, description="Variable holding the refresh token."
    )
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="This organization's cap on requests per minute."
    )
    sandbox: SandboxBooks | None = Field(
        default=None, description="Serve this organization from the bundled sandbox instead."
    )

    @model_validator(mode="after")
    def _connection_complete(self) -> Self:
        api = {
            "base_url": self.base_url,
            "token_url": self.token_url,
            "client_id_env": self.client_id_env,
            "client_secret_env": self.client_secret_env,
            "refresh_token_env": self.refresh_token_env,
        }
        given = [name for name, value in api.items() if value]
        if self.sandbox is not None and given:
            raise ValueError(
                f"organization {self.key} has both a sandbox and {', '.join(given)}; keep one."
            )
        missing = [name for name, value in api.items() if not value]
        if self.sandbox is None and missing:
            raise ValueError(
                f"organization {self.key} lacks {', '.join(missing)}: give all five for the "
                "real API (secrets by variable name), or `sandbox:` for the bundled sandbox."
            )
        return self


def read_organizations_file(path: str) -> list[Organization]:
    """The organizations a YAML file lists under ``organizations:``."""
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(
            f"the organizations file {path} does not exist; create it or unset the variable "
            "that names it."
        )
    data = yaml.safe_load(file.read_text()) or {}
    listed = data.get("organizations") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        raise ConfigurationError(
            f"{path} has no `organizations:` list; see the README's 'Several organizations'."
        )
    return [Organization.model_validate(entry) for entry in listed]


def checked(organizations: list[Organization]) -> list[Organization]:
    """The list, refused when two share a key or real and sandbox books would share a file."""
    keys = [o.key for o in organizations]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigurationError(
            f"organization keys repeat: {', '.join(repeated)}; make each unique."
        )
    kinds = {o.sandbox is None for o in organizations}
    if len(kinds) > 1:
        raise ConfigurationError(
            "the organizations mix the sandbox with real APIs; one warehouse holds one kind of "
            "books: declare the sandbox organizations in another deployment or file."
        )
    return organizations
