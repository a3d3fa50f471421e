"""dlt's ``rest_api`` source with the seed's configuration, into a DuckDB file.

The configuration is the seed's (16 resources, ``primary_key: id``, merge) with
only what it needs to run against this API: an OAuth2 refresh-token auth (dlt
ships client credentials only) and a page-number paginator with ``base_page=1``,
``page_param="page"`` and total-less stopping (the API sends no total; dlt stops
after an empty page). The seed's ``limit_param``/``limit`` keys are not accepted
by dlt's page-number paginator; the API's default page size is the same 200.

Run as a subprocess by ``benchmarks.run`` with ``FINANCE_API_*`` and
``BENCH_DLT_DUCKDB`` set; prints one JSON line ``{"records": N}``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dlt
import duckdb
from dlt.common.configuration import configspec
from dlt.common.typing import TSecretStrValue
from dlt.sources.helpers.rest_client.auth import OAuth2ClientCredentials
from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator
from dlt.sources.rest_api import rest_api_source

# (name, path, data selector) exactly as in the seed configuration.
SEED_RESOURCES = (
    ("users", "/v1/users", "users"),
    ("banking", "/v1/bankaccounts", "bankaccounts"),
    ("organizations", "/v1/organizations", "organizations"),
    ("contacts", "/v1/contacts", "contacts"),
    ("bills", "/v1/bills", "bills"),
    ("estimates", "/v1/estimates", "estimates"),
    ("items", "/v1/items", "items"),
    ("invoices", "/v1/invoices", "invoices"),
    ("expenses", "/v1/expenses", "expenses"),
    ("creditnotes", "/v1/creditnotes", "creditnotes"),
    ("customer_payments", "/v1/customerpayments", "customerpayments"),
    ("purchase_orders", "/v1/purchaseorders", "purchaseorders"),
    ("sales_orders", "/v1/salesorders", "salesorders"),
    ("journals", "/v1/journals", "journals"),
    ("taxes", "/v1/settings/taxes", "taxes"),
    ("transactions", "/v1/banktransactions", "banktransactions"),
)


@configspec
class OAuth2RefreshToken(OAuth2ClientCredentials):
    """The refresh-token grant (the seed's ``oauth2`` auth); the token is not rotated."""

    refresh_token: TSecretStrValue = None

    def build_access_token_request(self) -> dict[str, Any]:
        return {
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            "data": {
                "grant_type": "refresh_token",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "refresh_token": self.refresh_token,
            },
        }


def paginator() -> PageNumberPaginator:
    """The seed's page-number pagination, 1-based, stopping without a total."""
    return PageNumberPaginator(
        base_page=1, page_param="page", total_path=None, stop_after_empty_page=True
    )


def source(base_url: str, token_url: str, client_id: str, secret: str, refresh: str) -> Any:
    return rest_api_source({
        "client": {
            "base_url": base_url,
            "auth": OAuth2RefreshToken(
                access_token_url=token_url, client_id=client_id, client_secret=secret,
                refresh_token=refresh,
            ),
        },
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
        "resources": [
            {"name": name, "endpoint": {"path": path, "data_selector": selector,
                                        "paginator": paginator()}}
            for name, path, selector in SEED_RESOURCES
        ],
    })


def main() -> None:
    env = os.environ
    database = env["BENCH_DLT_DUCKDB"]
    pipeline = dlt.pipeline(
        pipeline_name="finance_bench",
        destination=dlt.destinations.duckdb(database),
        dataset_name="finance",
        pipelines_dir=env.get("BENCH_DLT_PIPELINES_DIR"),
    )
    pipeline.run(source(
        env["FINANCE_API_BASE_URL"], env["FINANCE_API_TOKEN_URL"], env["FINANCE_API_CLIENT_ID"],
        env["FINANCE_API_CLIENT_SECRET"], env["FINANCE_API_REFRESH_TOKEN"],
    ))
    with duckdb.connect(database, read_only=True) as conn:
        records = sum(
            conn.execute(f'select count(*) from finance."{name}"').fetchone()[0]
            for name, _, _ in SEED_RESOURCES
        )
    print(json.dumps({"records": records}), flush=True)


if __name__ == "__main__":
    main()
