"""The fault matrix at the Dagster level: every run ends with the warehouse equal to the API.

Each case is a real materialization of all sixteen assets against a sandbox that
misbehaves live (429 bursts, 5xx with JSON/HTML/empty bodies, dropped
connections, responses slower than the read timeout, tokens that expire after N
calls, and all of them at once). Retry waits are milliseconds (resource knobs);
the only real waits are the 1 s Retry-After of the sandbox's "429" fault. Seeds are
chosen so each run meets its fault a few times (the sandbox's faults are seeded).
"""

from __future__ import annotations

import time

import pytest

from finance_assets.endpoints import ENDPOINTS
from finance_assets.sandbox import FAULT_KINDS
from finance_assets_tests.harness import (
    SCALE,
    api_for,
    assert_warehouse_equals_sandbox,
    failure_message,
    run,
)


def metadata_sum(result, name: str) -> int:
    """Sum of one integer materialization metadata entry over the run's assets."""
    return sum(
        e.materialization.metadata[name].value for e in result.get_asset_materialization_events()
    )


def statuses(sb) -> dict[str, int]:
    """Responses per status (and ``closed``) over every API path the sandbox served."""
    out: dict[str, int] = {}
    for path, counts in sb.stats()["requests"].items():
        if path.startswith("/v1/"):
            for status, n in counts.items():
                out[status] = out.get(status, 0) + n
    return out


def test_burst_of_429_waits_retry_after_then_completes(make_sandbox, tmp_path) -> None:
    # 10% of calls answer 429 with Retry-After: 1, which the client must really wait.
    sb = make_sandbox(scale=SCALE, seed=10, fault_rate=0.1, fault_kinds=("429",), retry_after=1)
    started = time.monotonic()
    # One request in flight: a 429 answered to requests already on the wire together
    # would rightly share one wait, and the sum below counts each wait apart.
    api = api_for(sb, per_page=20, max_retry_after_seconds=5, max_in_flight=1)
    result = run(api, tmp_path / "w.duckdb")
    elapsed = time.monotonic() - started
    assert result.success, failure_message(result)
    limited = sb.stats()["rate_limited"]
    assert limited >= 2
    assert metadata_sum(result, "rate_limited_429") == limited
    assert elapsed >= limited * 1.0  # every Retry-After was honoured in full
    assert elapsed < limited * 1.0 + 15  # and not much more than that
    assert_warehouse_equals_sandbox(sb, tmp_path / "w.duckdb")


def test_retry_after_above_the_bound_fails_fast_naming_it(make_sandbox, tmp_path) -> None:
    # A real rate window: every call is over the limit and told to wait about 600 s.
    sb = make_sandbox(scale=SCALE, rate_limit=0, rate_window=600)
    started = time.monotonic()
    result = run(api_for(sb, max_retry_after_seconds=5), tmp_path / "w.duckdb", ["users"])
    assert time.monotonic() - started < 10
    message = failure_message(result)
    assert "rate limited with Retry-After" in message and "longer than the 5s allowed" in message
    assert "try again later" in message


@pytest.mark.parametrize(
    ("kinds", "seed"),
    [
        (("500", "502", "503", "504"), 7),  # JSON, HTML and empty bodies (the sandbox varies)
        (("close",), 7),  # connection dropped before any response byte
        (("slow",), 10),  # answers 0.8 s late, after the client's 0.3 s read timeout
    ],
    ids=["5xx", "closed", "slow"],
)
def test_transient_faults_at_ten_percent(make_sandbox, tmp_path, kinds, seed) -> None:
    sb = make_sandbox(
        scale=SCALE, seed=seed, fault_rate=0.1, fault_kinds=kinds, slow_seconds=0.8
    )
    result = run(api_for(sb, per_page=20, timeout_seconds=0.3), tmp_path / "w.duckdb")
    assert result.success, failure_message(result)
    faults = sb.stats()["faults_injected"]
    assert faults >= 2
    assert metadata_sum(result, "retries") >= faults
    if kinds[0] == "500":
        assert len({s for s in statuses(sb) if s.startswith("5")}) >= 2
    assert_warehouse_equals_sandbox(sb, tmp_path / "w.duckdb")


def test_token_expiring_after_every_n_requests(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(scale=SCALE, token_max_uses=4)
    result = run(api_for(sb, per_page=20), tmp_path / "w.duckdb")
    assert result.success, failure_message(result)
    pages = metadata_sum(result, "pages")
    assert sb.stats()["tokens_issued"] >= pages // 4 > 1
    assert statuses(sb).get("401", 0) >= 1  # the refresh happened on a real 401
    assert_warehouse_equals_sandbox(sb, tmp_path / "w.duckdb")


def test_all_faults_at_once(make_sandbox, tmp_path) -> None:
    sb = make_sandbox(
        scale=SCALE, seed=9, fault_rate=0.15, fault_kinds=FAULT_KINDS, slow_seconds=0.8,
        token_max_uses=5,
    )
    result = run(
        api_for(sb, per_page=20, timeout_seconds=0.3, max_retry_after_seconds=5),
        tmp_path / "w.duckdb",
    )
    assert result.success, failure_message(result)
    stats = sb.stats()
    assert stats["faults_injected"] >= 4 and stats["rate_limited"] >= 1
    assert stats["tokens_issued"] > 1
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 2 * len(ENDPOINTS) and all(e.passed for e in evaluations)
    assert_warehouse_equals_sandbox(sb, tmp_path / "w.duckdb")
