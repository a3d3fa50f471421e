"""Sandbox data at scale 1: the contract's JSON schemas, arithmetic and referential integrity."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from finance_assets.endpoints import BY_NAME, ENDPOINTS
from finance_assets.sandbox import Sandbox, SandboxConfig
from finance_assets.sandbox.data import MAX_AMOUNT, UNREPRESENTABLE, nullable_fields, q2
from finance_assets.sandbox.store import instant
from finance_assets_tests.conftest import fetch_token

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "api" / "openapi.yaml"
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _contract() -> dict[str, Any]:
    if not CONTRACT.exists():
        pytest.skip("API contract ../shared/api/openapi.yaml not found "
                    "(it exists only beside the project in CI and dev machines)")
    import yaml

    return yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))


def _validator_class() -> Any:
    """Draft 2020-12 plus checks of x-scale/x-precision and strict date/date-time formats."""
    from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

    def digits(validator: Any, value: int, instance: Any, schema: dict) -> Any:
        if isinstance(instance, (int, Decimal)) and not isinstance(instance, bool):
            exponent = Decimal(instance).as_tuple().exponent
            scale = max(0, -int(exponent))
            if "x-scale" in schema and scale > schema["x-scale"]:
                yield ValidationError(f"{instance} has more than {schema['x-scale']} decimals")
            integral = len(str(abs(int(Decimal(instance)))).lstrip("0"))
            if "x-precision" in schema and integral + schema.get("x-scale", 0) > value:
                yield ValidationError(f"{instance} exceeds precision {value}")

    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _is_date_time(text: object) -> bool:
        return not isinstance(text, str) or bool(
            _DATE_TIME.match(text) and dt.datetime.fromisoformat(text.upper()))

    @checker.checks("date", raises=ValueError)
    def _is_date(text: object) -> bool:
        return not isinstance(text, str) or bool(
            re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) and dt.date.fromisoformat(text))

    cls = validators.extend(Draft202012Validator, {"x-precision": digits})
    return lambda schema: cls(schema, format_checker=checker)


@pytest.fixture(scope="module")
def schemas() -> Any:
    """validate(name, instance): against a component or any sub-schema of the contract."""
    doc = _contract()
    make = _validator_class()

    def validate(schema: dict[str, Any] | str, instance: Any) -> None:
        if isinstance(schema, str):
            schema = {"$ref": f"#/components/schemas/{schema}"}
        make({**schema, "components": doc["components"]}).validate(instance)

    validate.doc = doc  # type: ignore[attr-defined]
    return validate


def test_every_served_record_matches_the_contract(sandbox_scale1: Sandbox, schemas) -> None:
    """Full read of all 16 endpoints over HTTP: envelopes and records against openapi.yaml."""
    doc = schemas.doc
    assert {p for p in doc["paths"] if p.startswith("/v1/")} == {e.path for e in ENDPOINTS}
    sb = sandbox_scale1
    total = 0
    with httpx.Client(base_url=sb.base_url) as client:
        token_response = client.post(sb.token_url, data={
            "grant_type": "refresh_token", "client_id": sb.client_id,
            "client_secret": sb.client_secret, "refresh_token": sb.refresh_token})
        schemas("TokenResponse", token_response.json())
        client.headers["Authorization"] = f"Bearer {token_response.json()['access_token']}"
        for endpoint in ENDPOINTS:
            operation = doc["paths"][endpoint.path]["get"]
            assert operation["x-data-selector"] == endpoint.data_selector
            assert operation["x-resource-name"] == endpoint.name
            envelope = operation["responses"]["200"]["content"]["application/json"]["schema"]
            page, served = 1, []
            while True:
                r = client.get(endpoint.path, params={"page": page})
                body = json.loads(r.content, parse_float=Decimal)
                schemas(envelope, body)  # validates every record through the items schema
                served += body[endpoint.data_selector]
                if not body["page_context"]["has_more_page"]:
                    break
                page += 1
            assert served == sb.records(endpoint.name)
            total += len(served)
        for query, status in (("page=0", 400), ("", 404)):
            path = "/v1/invoices?" + query if query else "/v1/nope"
            error = client.get(path)
            assert error.status_code == status
            schemas("ErrorEnvelope", error.json())
        client.headers.pop("Authorization")
        schemas("ErrorEnvelope", client.get("/v1/users").json())
        bad = client.post(sb.token_url, data={"grant_type": "password"})
        schemas("OAuthError", bad.json())
    assert 15_000 <= total <= 25_000


def test_schema_check_catches_null_violations(make_sandbox, schemas) -> None:
    """The validator is not vacuous: the sandbox's deliberate bad nulls fail it."""
    from jsonschema import ValidationError

    sb = make_sandbox(scale=0.02, null_violations=1)
    failures = 0
    for endpoint in ENDPOINTS:
        for record in sb.records(endpoint.name):
            try:
                schemas(endpoint.model.__name__, record)
            except ValidationError:
                failures += 1
    assert failures == len(ENDPOINTS)


def test_models_accept_every_record(sandbox_scale1: Sandbox) -> None:
    for endpoint in ENDPOINTS:
        for record in sandbox_scale1.records(endpoint.name):
            endpoint.model.model_validate(record)
            assert set(endpoint.model.model_fields) <= set(record)


def _ids(sb: Sandbox, name: str) -> set[str]:
    return {r["id"] for r in sb.records(name)}


def test_arithmetic(sandbox_scale1: Sandbox) -> None:
    sb = sandbox_scale1
    for endpoint in ENDPOINTS:
        children = endpoint.children
        for r in sb.records(endpoint.name):
            if endpoint.name == "journals":
                for side in ("debit", "credit"):
                    assert sum(li["amount"] for li in r["line_items"]
                               if li["debit_or_credit"] == side) == r["total"]
            elif "line_items" in children:
                lines = r["line_items"]
                for li in lines:
                    assert li["item_total"] == q2(li["quantity"] * li["rate"])
                    assert (li["tax_id"] is None) <= (li["tax_percentage"] == 0)
                assert r["sub_total"] == sum(li["item_total"] for li in lines)
                assert r["tax_total"] == sum(
                    q2(li["item_total"] * li["tax_percentage"] / 100) for li in lines)
                discount = r.get("discount_total", 0)
                assert r["total"] == r["sub_total"] - discount + r["tax_total"]
                if "balance" in r:  # an overpaid document (paid) has a negative balance
                    assert r["balance"] <= r["total"]
                    assert r["balance"] >= 0 or r["status"] == "paid"
            elif endpoint.name == "customer_payments":
                applied = sum(a["amount_applied"] for a in r["applied_invoices"])
                assert r["amount"] == applied + r["unused_amount"]
            elif endpoint.name == "expenses":
                assert r["total"] == r["sub_total"] + r["tax_amount"]


def test_referential_integrity(sandbox_scale1: Sandbox) -> None:
    sb = sandbox_scale1
    org = _ids(sb, "organizations")
    contacts = {r["id"]: r for r in sb.records("contacts")}
    customers = {i for i, c in contacts.items() if c["contact_type"] == "customer"}
    vendors = {i for i, c in contacts.items() if c["contact_type"] == "vendor"}
    items, taxes, accounts = _ids(sb, "items"), _ids(sb, "taxes"), _ids(sb, "banking")
    users, transactions = _ids(sb, "users"), _ids(sb, "transactions")
    invoices = {r["id"]: r for r in sb.records("invoices")}
    bills = _ids(sb, "bills")
    for name in ("users", "banking"):
        assert all(r["organization_id"] in org for r in sb.records(name))
    for name in ("contacts", "items"):
        assert all(r["tax_id"] in taxes | {None} for r in sb.records(name))
    for name in ("invoices", "estimates", "sales_orders", "creditnotes", "customer_payments"):
        for r in sb.records(name):
            assert r["customer_id"] in customers
            assert r["customer_name"] == contacts[r["customer_id"]]["contact_name"]
    for name in ("bills", "purchase_orders"):
        assert all(r["vendor_id"] in vendors for r in sb.records(name))
    for endpoint in ENDPOINTS:
        if endpoint.children.get("line_items") is BY_NAME["invoices"].children["line_items"]:
            for r in sb.records(endpoint.name):
                for li in r["line_items"]:
                    assert li["item_id"] in items | {None} and li["tax_id"] in taxes | {None}
        for r in sb.records(endpoint.name):
            assert r.get("invoice_id") in set(invoices) | {None}
            if "invoice_id" in r and r["invoice_id"]:
                assert invoices[r["invoice_id"]]["customer_id"] == r["customer_id"]
    for p in sb.records("customer_payments"):
        assert p["account_id"] in accounts and p["transaction_id"] in transactions | {None}
        for a in p["applied_invoices"]:
            assert invoices[a["invoice_id"]]["customer_id"] == p["customer_id"]
            assert a["amount_applied"] <= invoices[a["invoice_id"]]["total"]
    assert all(r["bill_id"] in bills | {None} for r in sb.records("purchase_orders"))
    for e in sb.records("expenses"):
        assert e["account_id"] in accounts and e["user_id"] in users
        assert e["vendor_id"] in vendors | {None} and e["customer_id"] in customers | {None}
        assert e["transaction_id"] in transactions | {None} and e["tax_id"] in taxes | {None}
    for t in sb.records("transactions"):
        assert t["account_id"] in accounts and t["contact_id"] in set(contacts) | {None}
    for j in sb.records("journals"):
        assert j["user_id"] in users
        assert all(li["contact_id"] in set(contacts) | {None} for li in j["line_items"])


def test_shape_and_edges(sandbox_scale1: Sandbox) -> None:
    """Sizes, nulls, ids, offsets, exact money, unicode, escapes and extra fields."""
    sb = sandbox_scale1
    counts = {e.name: len(sb.records(e.name)) for e in ENDPOINTS}
    assert counts["organizations"] == 1 and 2 <= counts["users"] <= 20
    assert counts["taxes"] <= 20 and counts["banking"] <= 20 and counts["items"] >= 100
    assert 500 <= counts["contacts"] <= 2000 and counts["invoices"] >= 2000
    everything = [r for e in ENDPOINTS for r in sb.records(e.name)]
    text = json.dumps(everything, default=str, ensure_ascii=False)
    for needle in ("é", "東", "🎉", "مرحبا", "שלום", '\\"', "\\\\", "\\n"):
        assert needle in text, needle
    for e in ENDPOINTS:
        rows = sb.records(e.name)
        assert len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            assert instant(r["last_modified_time"]) >= instant(r["created_time"])
        if len(rows) >= 100:  # a fair share of nulls in every nullable field
            for field in nullable_fields(e.model):
                share = sum(r[field] is None for r in rows) / len(rows)
                assert 0.05 <= share < 1, (e.name, field, share)
    ids = [int(r["id"]) for r in everything]
    assert sum(i > 2**53 for i in ids) > len(ids) / 2
    assert {len(str(i)) for i in ids} >= {16, 17, 18, 19}
    assert any(float(i) != i for i in ids)  # some ids do not survive a float
    offsets = Counter(r["created_time"][19:] for r in everything)
    assert {"Z", "+00:00", "+05:30", "-08:00", "-04:00"} <= set(offsets)
    money = [v for r in everything for v in r.values() if isinstance(v, Decimal)]
    assert MAX_AMOUNT in money and UNREPRESENTABLE in money
    assert Decimal(float(UNREPRESENTABLE)) != UNREPRESENTABLE
    extras = [r for e in ENDPOINTS for r in sb.records(e.name)
              if set(r) - set(e.model.model_fields)]
    assert len(extras) >= len(ENDPOINTS)
    assert any(isinstance(r.get("legacy_amount"), Decimal) for r in extras)
    assert any(isinstance(r.get("custom_fields"), dict) for r in extras)
    extra_lines = [li for r in sb.records("invoices") for li in r["line_items"]
                   if "project_code" in li]
    assert extra_lines and isinstance(extra_lines[0]["line_discount_rate"], Decimal)


def test_generation_speed_and_determinism() -> None:
    start = time.perf_counter()
    first = Sandbox(SandboxConfig(seed=42, scale=1.0))
    elapsed = time.perf_counter() - start
    assert elapsed < 6, f"scale 1 took {elapsed:.2f}s"  # about 1.3 s on a 2-core VM
    second = Sandbox(SandboxConfig(seed=42, scale=1.0))
    assert first.tables["journals"].blobs == second.tables["journals"].blobs


def test_fetch_token_helper(sandbox_scale1: Sandbox) -> None:
    assert fetch_token(sandbox_scale1)
