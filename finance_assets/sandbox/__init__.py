"""A local, stdlib-only implementation of the financial API contract.

The project's embedded default API, the test suite's double and the benchmarks'
target: deterministic data from a seed, real HTTP, OAuth tokens, pagination,
``modified_since``, rate limits, injected faults and live mutations.
"""

from finance_assets.sandbox.server import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REFRESH_TOKEN,
    FAULT_KINDS,
    MALFORMED_KINDS,
    Sandbox,
    SandboxConfig,
)

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_REFRESH_TOKEN",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "Sandbox",
    "SandboxConfig",
]
