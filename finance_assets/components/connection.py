"""Which source a deployment reads, decided from its YAML and environment before any run.

The YAML names each credential by its environment variable (``{{ env.NAME }}``); the
value is never rendered into the definitions, only the name, so the UI shows names
and a run reads values when it starts. The sandbox is used only when chosen, or when
none of the connection's variables is set; anything in between is an error that
names every missing variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import dagster as dg

ENV_REFERENCE = re.compile(r"^\s*\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")
Source = Literal["api", "sandbox"]
SOURCE_CHOICES: tuple[Source, ...] = ("api", "sandbox")


class ConfigurationError(ValueError):
    """The deployment's configuration cannot be run as it is; the message says what to set."""


@dataclass(frozen=True)
class Setting:
    """One connection setting: the environment variable that holds it, or a plain value."""

    env_var: str | None = None
    value: str | None = None

    def read(self, environ: Mapping[str, str]) -> str | None:
        """The value (empty counts as unset)."""
        value = environ.get(self.env_var) if self.env_var else self.value
        return value or None

    def for_resource(self) -> str | dg.EnvVar:
        """What the resource holds: the variable by name (the UI shows only that), or the value."""
        return dg.EnvVar(self.env_var) if self.env_var else str(self.value)

    @property
    def label(self) -> str:
        return self.env_var or "a value in defs.yaml"


def _setting(context: dg.ResolutionContext, raw: str | None) -> Setting | None:
    """``{{ env.NAME }}`` becomes the variable's name; anything else is rendered as a value."""
    if raw is None:
        return None
    match = ENV_REFERENCE.match(str(raw))
    if match:
        return Setting(env_var=match.group(1))
    value = context.resolve_value(raw)
    return Setting(value=str(value)) if value not in (None, "") else None


def _secret(context: dg.ResolutionContext, raw: str | None) -> Setting | None:
    """Credentials are only ever named: a value written into the YAML would be committed."""
    if raw is not None and not ENV_REFERENCE.match(str(raw)):
        raise ConfigurationError(
            "a credential in defs.yaml is written as a value; write `{{ env.NAME }}` and set "
            "the variable NAME instead, so the secret never lands in a file."
        )
    return _setting(context, raw)


NamedSetting = Annotated[
    Setting | None,
    dg.Resolver(_setting, model_field_type=str | None, inject_before_resolve=False),
]
SecretSetting = Annotated[
    Setting | None,
    dg.Resolver(_secret, model_field_type=str | None, inject_before_resolve=False),
]


class ApiConnection(dg.Model, dg.Resolvable):
    """The real API's connection, each setting named by ``{{ env.NAME }}``."""

    base_url: NamedSetting = Setting(env_var="FINANCE_API_BASE_URL")
    token_url: NamedSetting = Setting(env_var="FINANCE_API_TOKEN_URL")
    client_id: SecretSetting = Setting(env_var="FINANCE_API_CLIENT_ID")
    client_secret: SecretSetting = Setting(env_var="FINANCE_API_CLIENT_SECRET")
    refresh_token: SecretSetting = Setting(env_var="FINANCE_API_REFRESH_TOKEN")
    rate_limit_per_minute: NamedSetting = Setting(env_var="FINANCE_API_RATE_LIMIT_PER_MINUTE")

    @property
    def credentials(self) -> dict[str, Setting | None]:
        """The five settings a connection needs, by resource field."""
        return {
            "base_url": self.base_url,
            "token_url": self.token_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
        }

    def rate_limit(self, environ: Mapping[str, str]) -> int | None:
        """The configured requests-per-minute cap (not a secret, so read when loading)."""
        text = self.rate_limit_per_minute.read(environ) if self.rate_limit_per_minute else None
        if text is None:
            return None
        if not text.strip().isdigit() or int(text) < 1:
            raise ConfigurationError(
                f"{self.rate_limit_per_minute.label} is {text!r}; set it to a whole number of "
                "requests per minute (at least 1), or unset it."
            )
        return int(text)


def choose_source(
    chosen: Setting | None, connection: ApiConnection, environ: Mapping[str, str] = os.environ
) -> Source:
    """``api`` or ``sandbox``: as chosen, else the API when configured, the sandbox when
    nothing of it is; a partial configuration raises, naming every missing setting."""
    choice = chosen.read(environ) if chosen else None
    if choice not in (None, *SOURCE_CHOICES):
        raise ConfigurationError(
            f"{chosen.label if chosen else 'source'} is {choice!r}; set it to 'api' or "
            "'sandbox', or unset it to read the API when it is configured and the sandbox "
            "when nothing of it is."
        )
    if choice == "sandbox":
        return "sandbox"
    settings = {**connection.credentials, "rate_limit": connection.rate_limit_per_minute}
    present = [s for s in settings.values() if s is not None and s.read(environ)]
    missing = [
        (s.label if s else f"{field} (not in defs.yaml)")
        for field, s in connection.credentials.items()
        if s is None or not s.read(environ)
    ]
    if not missing:
        return "api"
    if not present and choice != "api":
        return "sandbox"
    labels = [s.label for s in present]
    chose_api = f"{chosen.label if chosen else 'source'} is 'api' but " if choice == "api" else ""
    joined = "while" if chose_api else "but"
    also_set = f", {joined} {_listed(labels)} {_are(labels)}" if labels else ""
    remedy = "to read the real API" if chose_api else "for the real API, or none for the sandbox"
    raise ConfigurationError(
        f"{chose_api}{_listed(missing)} {_are(missing)} not set{also_set}: set all five {remedy}."
    )


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _are(names: list[str]) -> str:
    return "is" if len(names) == 1 else "are"
