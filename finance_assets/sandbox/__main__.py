"""Command line: serve a sandbox until Ctrl-C or SIGTERM.

Example: ``python -m finance_assets.sandbox --port 8765 --seed 42 --scale 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading

from finance_assets.sandbox.data import BREAKABLE_RULES
from finance_assets.sandbox.server import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REFRESH_TOKEN,
    FAULT_KINDS,
    MALFORMED_KINDS,
    Sandbox,
    SandboxConfig,
)


def parse_args(argv: list[str] | None = None) -> SandboxConfig:
    """Flags to a config; SANDBOX_CLIENT_ID/SECRET/REFRESH_TOKEN override the demo credentials."""
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m finance_assets.sandbox", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--scale", type=float, default=1.0, help="1 = about 20,000 records")
    p.add_argument("--token-ttl", type=float, default=3600, help="access token lifetime, s")
    p.add_argument("--token-max-uses", type=int, default=None, help="API calls per token")
    p.add_argument("--rate-limit", type=int, default=None, help="requests/minute (429 above)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of faulted requests")
    p.add_argument("--fault-kinds", default=None, help=f"comma list of {','.join(FAULT_KINDS)}")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added per API call")
    p.add_argument("--slow-seconds", type=float, default=1.0, help="stall of a 'slow' fault")
    p.add_argument("--rate-window", type=float, default=60.0, help="rate window length, s")
    p.add_argument("--malformed", default=None, choices=MALFORMED_KINDS,
                   help="answer every call with this wrong answer")
    p.add_argument("--null-violations", type=int, default=0, help="bad nulls per resource")
    p.add_argument("--bad-records", type=int, default=0,
                   help="records per resource the schema cannot hold")
    p.add_argument("--broken-rules", default=None,
                   help=f"comma list of contract rules to break: {','.join(BREAKABLE_RULES)}")
    p.add_argument("--client-id", default=env.get("SANDBOX_CLIENT_ID", DEMO_CLIENT_ID))
    p.add_argument("--client-secret",
                   default=env.get("SANDBOX_CLIENT_SECRET", DEMO_CLIENT_SECRET))
    p.add_argument("--refresh-token",
                   default=env.get("SANDBOX_REFRESH_TOKEN", DEMO_REFRESH_TOKEN))
    a = p.parse_args(argv)
    return SandboxConfig(
        seed=a.seed, scale=a.scale, host=a.host, port=a.port, token_ttl=a.token_ttl,
        token_max_uses=a.token_max_uses, rate_limit=a.rate_limit, fault_rate=a.fault_rate,
        fault_kinds=tuple(a.fault_kinds.split(",")) if a.fault_kinds else None,
        latency=a.latency, slow_seconds=a.slow_seconds, rate_window=a.rate_window,
        malformed=a.malformed, null_violations=a.null_violations, bad_records=a.bad_records,
        broken_rules=tuple(a.broken_rules.split(",")) if a.broken_rules else (),
        client_id=a.client_id,
        client_secret=a.client_secret, refresh_token=a.refresh_token,
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Sandbox(config) as sandbox:
        print(f"base URL:  {sandbox.base_url}", flush=True)
        print(f"token URL: {sandbox.token_url}", flush=True)
        print(f"client_id: {config.client_id}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
