"""The raw floor: a plain sequential httpx loop over all pages of all 16 endpoints.

One token, keep-alive, ``json.loads`` of every page and nothing else, so it is the
least any client must spend on the same data. Run as a subprocess by
``benchmarks.run`` with the ``FINANCE_API_*`` variables set; prints one JSON line
``{"records": N, "requests": M}``.
"""

from __future__ import annotations

import json
import os
import time

import httpx

from finance_assets.endpoints import ENDPOINTS

PER_PAGE = 200


def fetch_all(base_url: str, token_url: str, form: dict[str, str]) -> tuple[int, int]:
    """Records and requests for a full read; honours Retry-After so a rate limit can't break it."""
    records = requests = 0
    with httpx.Client(base_url=base_url, timeout=60) as http:
        token = http.post(token_url, data=form).raise_for_status().json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        for endpoint in ENDPOINTS:
            page = 1
            while True:
                response = http.get(endpoint.path, params={"page": page, "per_page": PER_PAGE})
                requests += 1
                if response.status_code == 429:
                    time.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                body = json.loads(response.content)
                rows = body[endpoint.data_selector]
                records += len(rows)
                if not body["page_context"]["has_more_page"] or len(rows) < PER_PAGE:
                    break
                page += 1
    return records, requests


def main() -> None:
    env = os.environ
    form = {"grant_type": "refresh_token", "client_id": env["FINANCE_API_CLIENT_ID"],
            "client_secret": env["FINANCE_API_CLIENT_SECRET"],
            "refresh_token": env["FINANCE_API_REFRESH_TOKEN"]}
    records, requests = fetch_all(
        env["FINANCE_API_BASE_URL"], env["FINANCE_API_TOKEN_URL"], form
    )
    print(json.dumps({"records": records, "requests": requests}), flush=True)


if __name__ == "__main__":
    main()
