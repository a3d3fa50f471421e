"""Shared fixtures: sandboxes on free loopback ports, stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from finance_assets.sandbox import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REFRESH_TOKEN,
    Sandbox,
    SandboxConfig,
)
from finance_assets_tests.harness import CHROMIUM, CHROMIUM_FLAGS, EXPECT_SECONDS, DagsterDev

SMALL_SCALE = 0.05  # about 1,000 records: fast, yet several pages per big resource


class SandboxFactory:
    """Starts sandboxes from config keywords and stops them all on close."""

    def __init__(self) -> None:
        self.started: list[Sandbox] = []

    def __call__(self, **config: Any) -> Sandbox:
        config.setdefault("scale", SMALL_SCALE)
        sandbox = Sandbox(SandboxConfig(**config)).start()
        self.started.append(sandbox)
        return sandbox

    def close(self) -> None:
        for sandbox in self.started:
            sandbox.stop()


@pytest.fixture
def make_sandbox() -> Iterator[SandboxFactory]:
    """``make_sandbox(**config) -> Sandbox`` for one test."""
    factory = SandboxFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def make_module_sandbox() -> Iterator[SandboxFactory]:
    """The same factory, for sandboxes shared by the tests of one module."""
    factory = SandboxFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def make_session_sandbox() -> Iterator[SandboxFactory]:
    """The same factory, for sandboxes shared by a whole session (read-only use)."""
    factory = SandboxFactory()
    yield factory
    factory.close()


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A fresh small sandbox with default settings."""
    return make_sandbox()


@pytest.fixture(scope="session")
def sandbox_scale1(make_session_sandbox: SandboxFactory) -> Sandbox:
    """The full-size (scale 1) sandbox; tests must not mutate or reconfigure it."""
    return make_session_sandbox(scale=1.0)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright, for the tests of one module."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}")
    expect.set_options(timeout=EXPECT_SECONDS * 1000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def start_dagster_dev(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., DagsterDev]]:
    """``start_dagster_dev(**FINANCE_variables) -> DagsterDev``, answering; each is stopped
    (its whole process group) when the module's tests are done."""
    started: list[DagsterDev] = []

    def start(**finance: str) -> DagsterDev:
        workdir: Path = tmp_path_factory.mktemp("dg-dev")
        started.append(DagsterDev(workdir, **finance))
        return started[-1].start()

    yield start
    for ui in started:
        ui.stop()


def fetch_token(sandbox: Sandbox, client: httpx.Client | None = None) -> str:
    """An access token from the sandbox's token URL with the demo credentials."""
    form = {"grant_type": "refresh_token", "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret, "refresh_token": sandbox.refresh_token}
    response = (client or httpx).post(sandbox.token_url, data=form)
    response.raise_for_status()
    return response.json()["access_token"]


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """A keep-alive client on the small sandbox, authorized with a fresh token."""
    with httpx.Client(base_url=sandbox.base_url, timeout=10) as client:
        client.headers["Authorization"] = f"Bearer {fetch_token(sandbox, client)}"
        yield client


__all__ = ["DEMO_CLIENT_ID", "DEMO_CLIENT_SECRET", "DEMO_REFRESH_TOKEN", "fetch_token"]
