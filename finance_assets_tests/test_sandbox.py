"""The sandbox server against the API contract, over real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
from decimal import Decimal
from urllib.parse import quote

import httpx
import pytest

from finance_assets.endpoints import BY_NAME, ENDPOINTS
from finance_assets.sandbox import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REFRESH_TOKEN,
    Sandbox,
    SandboxConfig,
)
from finance_assets.sandbox.__main__ import parse_args
from finance_assets.sandbox.store import instant
from finance_assets_tests.conftest import fetch_token

RATE_HEADERS = ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset")


def read_all(client: httpx.Client, path: str, per_page: int = 200, **params: str) -> list[dict]:
    """Walk pages until has_more_page is false; records decoded with exact decimals."""
    selector = next(e.data_selector for e in ENDPOINTS if e.path == path)
    out, page = [], 1
    while True:
        r = client.get(path, params={"page": page, "per_page": per_page, **params})
        assert r.status_code == 200, r.text
        body = json.loads(r.content, parse_float=Decimal)
        assert body["page_context"] == {"page": page, "per_page": per_page,
                                        "has_more_page": body["page_context"]["has_more_page"]}
        out += body[selector]
        if not body["page_context"]["has_more_page"]:
            return out
        assert len(body[selector]) == per_page
        page += 1


def token_post(sandbox: Sandbox, **overrides: str | None) -> httpx.Response:
    form = {"grant_type": "refresh_token", "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET, "refresh_token": DEMO_REFRESH_TOKEN}
    form.update(overrides)
    return httpx.post(sandbox.token_url, data={k: v for k, v in form.items() if v is not None})


# ---------- tokens ----------
def test_token_success(sandbox: Sandbox) -> None:
    r = token_post(sandbox)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["access_token"] and "refresh_token" not in body and body["scope"]
    assert token_post(sandbox).json()["access_token"] != body["access_token"]
    assert sandbox.stats()["tokens_issued"] == 2


@pytest.mark.parametrize(("overrides", "status", "error"), [
    ({"refresh_token": "wrong"}, 400, "invalid_grant"),
    ({"refresh_token": None}, 400, "invalid_grant"),
    ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
    ({"grant_type": None}, 400, "unsupported_grant_type"),
    ({"client_secret": "wrong"}, 401, "invalid_client"),
    ({"client_id": None}, 401, "invalid_client"),
])
def test_token_errors(sandbox: Sandbox, overrides: dict, status: int, error: str) -> None:
    r = token_post(sandbox, **overrides)
    assert (r.status_code, r.json()["error"]) == (status, error)
    assert sandbox.stats()["tokens_issued"] == 0


def test_token_expires_after_ttl(make_sandbox) -> None:
    sb = make_sandbox(token_ttl=0.4)
    assert token_post(sb).json()["expires_in"] == 1  # whole seconds, at least 1
    headers = {"Authorization": f"Bearer {fetch_token(sb)}"}
    assert httpx.get(sb.base_url + "/v1/users", headers=headers).status_code == 200
    time.sleep(0.5)
    r = httpx.get(sb.base_url + "/v1/users", headers=headers)
    assert (r.status_code, r.json()["code"]) == (401, 57)


def test_token_expires_after_max_uses(make_sandbox) -> None:
    sb = make_sandbox(token_max_uses=2)
    headers = {"Authorization": f"Bearer {fetch_token(sb)}"}
    codes = [httpx.get(sb.base_url + "/v1/taxes", headers=headers).status_code
             for _ in range(1)]
    codes += [httpx.get(sb.base_url + "/v1/settings/taxes", headers=headers).status_code
              for _ in range(3)]
    assert codes == [404, 200, 200, 401]  # a 404 does not use the token
    headers = {"Authorization": f"Bearer {fetch_token(sb)}"}
    assert httpx.get(sb.base_url + "/v1/users", headers=headers).status_code == 200


def test_revoke_tokens(sandbox: Sandbox, api: httpx.Client) -> None:
    assert api.get("/v1/users").status_code == 200
    sandbox.revoke_tokens()
    r = api.get("/v1/users")
    assert (r.status_code, r.json()) == (401, {"code": 57,
                                               "message": "invalid or expired access token"})


# ---------- lists and pagination ----------
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_pagination_to_the_end(sandbox: Sandbox, api: httpx.Client, endpoint) -> None:
    expected = sandbox.records(endpoint.name)
    assert expected, "every resource has at least one record"
    assert read_all(api, endpoint.path, per_page=7) == expected
    assert read_all(api, endpoint.path) == expected
    past = (len(expected) // 7) + 2
    r = api.get(endpoint.path, params={"page": past, "per_page": 7})
    assert r.json() == {"code": 0, "message": "success", endpoint.data_selector: [],
                        "page_context": {"page": past, "per_page": 7, "has_more_page": False}}


def test_defaults_and_ignored_params(make_sandbox) -> None:
    sandbox = make_sandbox(scale=0.1)
    headers = {"Authorization": f"Bearer {fetch_token(sandbox)}"}
    r = httpx.get(sandbox.base_url + "/v1/invoices", headers=headers,
                  params={"sort": "id", "foo": "bar", "limit": "x"})
    body = r.json()
    assert body["page_context"] == {"page": 1, "per_page": 200, "has_more_page": True}
    assert len(body["invoices"]) == 200
    assert [i["id"] for i in body["invoices"]] == [
        i["id"] for i in sandbox.records("invoices")[:200]]
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["date"].endswith("GMT")


def test_exact_page_boundary_has_no_more(sandbox: Sandbox, api: httpx.Client) -> None:
    n = len(sandbox.records("items"))
    r = api.get("/v1/items", params={"per_page": n if n <= 200 else 200})
    assert r.json()["page_context"]["has_more_page"] is (n > 200)


@pytest.mark.parametrize("query", [
    "page=0", "page=-1", "page=abc", "page=1.5", "page=", "per_page=0", "per_page=201",
    "per_page=x", "per_page=2.0", "modified_since=yesterday", "modified_since=",
    "modified_since=2025-01-01T00:00:00", "modified_since=2025-01-01",
    "modified_since=2025-01-01T00:00:00+05:30",  # raw '+' decodes to a space: rejected
    "modified_since=2025-13-01T00:00:00Z", "modified_since=2025-01-01T25:00:00Z",
])
def test_bad_parameters(api: httpx.Client, query: str) -> None:
    r = api.get("/v1/invoices?" + query)
    assert (r.status_code, r.json()["code"]) == (400, 2), query
    assert all(h in r.headers for h in RATE_HEADERS)


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer nope", "Basic abc"])
def test_unauthorized(sandbox: Sandbox, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = httpx.get(sandbox.base_url + "/v1/contacts", headers=headers)
    assert (r.status_code, r.json()["code"]) == (401, 57)
    assert all(h in r.headers for h in RATE_HEADERS) and "date" in r.headers


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/invoices/", "/v2/invoices", "/",
                                  "/v1/settings", "/v1/invoices/123"])
def test_unknown_path(api: httpx.Client, path: str) -> None:
    r = api.get(path)
    assert (r.status_code, r.json()["code"]) == (404, 5)
    assert all(h in r.headers for h in RATE_HEADERS)


def test_keep_alive(sandbox: Sandbox) -> None:
    """Several requests over one HTTP/1.1 connection."""
    conn = http.client.HTTPConnection(sandbox.base_url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {fetch_token(sandbox)}"}
    sockets = set()
    for path in ("/v1/users", "/v1/nope", "/v1/items?per_page=3"):
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.version == 11 and not response.will_close
        sockets.add(id(conn.sock))
    assert len(sockets) == 1
    conn.close()


# ---------- ordering and modified_since ----------
def test_ordering(sandbox: Sandbox, api: httpx.Client) -> None:
    for endpoint in ENDPOINTS:
        rows = read_all(api, endpoint.path, per_page=50)
        keys = [(instant(r["created_time"]), int(r["id"])) for r in rows]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
    invoices = sandbox.records("invoices")
    # The data exercises both keys: ties on the instant, and ids of different lengths.
    instants = [instant(r["created_time"]) for r in invoices]
    assert len(set(instants)) < len(instants)
    assert len({len(r["id"]) for r in invoices}) > 1
    assert [r["id"] for r in invoices] != sorted(r["id"] for r in invoices)


def _as_offset(moment: dt.datetime, minutes: int) -> str:
    return moment.astimezone(dt.timezone(dt.timedelta(minutes=minutes))).isoformat()


def test_modified_since_inclusive_across_offsets(sandbox: Sandbox, api: httpx.Client) -> None:
    records = sandbox.records("invoices")
    pivot = sorted(records, key=lambda r: instant(r["last_modified_time"]))[len(records) // 2]
    moment = dt.datetime.fromisoformat(pivot["last_modified_time"])
    expected = [r for r in records
                if instant(r["last_modified_time"]) >= moment.timestamp()]
    assert pivot in expected and len(expected) < len(records)
    spellings = [_as_offset(moment, 330), _as_offset(moment, -480),
                 moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")]
    for text in spellings:
        assert read_all(api, "/v1/invoices", per_page=30, modified_since=text) == expected
    # Percent-encoded '+' by hand, as the contract asks.
    encoded = quote(_as_offset(moment, 330), safe=":")
    assert "%2B" in encoded
    raw = api.get("/v1/invoices?per_page=200&modified_since=" + encoded)
    assert [r["id"] for r in raw.json()["invoices"]] == [r["id"] for r in expected[:200]]
    later = read_all(api, "/v1/invoices",
                     modified_since=(moment + dt.timedelta(seconds=1)).isoformat())
    assert pivot not in later


def test_modified_since_fraction_and_lowercase(api: httpx.Client) -> None:
    r = api.get("/v1/users", params={"modified_since": "2000-01-01t00:00:00.5z"})
    assert r.status_code == 200 and r.json()["users"]


# ---------- rate limit, faults, latency ----------
def test_rate_limit(make_sandbox) -> None:
    sb = make_sandbox(rate_limit=3)
    with httpx.Client(base_url=sb.base_url) as client:
        client.headers["Authorization"] = f"Bearer {fetch_token(sb, client)}"
        seen = [client.get("/v1/users") for _ in range(4)]
        for _ in range(3):
            fetch_token(sb, client)  # token requests are never limited
    assert [r.status_code for r in seen] == [200, 200, 200, 429]
    assert [r.headers["X-Rate-Limit-Remaining"] for r in seen] == ["2", "1", "0", "0"]
    assert {r.headers["X-Rate-Limit-Limit"] for r in seen} == {"3"}
    limited = seen[-1]
    assert limited.json()["code"] == 44
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert 0 <= int(limited.headers["X-Rate-Limit-Reset"]) <= 60
    assert sb.stats()["rate_limited"] == 1
    sb.configure(rate_limit=None)
    r = httpx.get(sb.base_url + "/v1/users",
                  headers={"Authorization": seen[0].request.headers["Authorization"]})
    assert r.status_code == 200
    assert int(r.headers["X-Rate-Limit-Limit"]) >= 100_000


def test_unlimited_headers_count_truthfully(api: httpx.Client) -> None:
    first, second = api.get("/v1/users"), api.get("/v1/users")
    limit = int(first.headers["X-Rate-Limit-Limit"])
    assert int(first.headers["X-Rate-Limit-Remaining"]) == limit - 1
    assert int(second.headers["X-Rate-Limit-Remaining"]) == limit - 2


@pytest.mark.parametrize("kind", ["500", "502", "503", "504"])
def test_http_faults(make_sandbox, kind: str) -> None:
    sb = make_sandbox(fault_rate=1.0, fault_kinds=(kind,))
    with httpx.Client(base_url=sb.base_url) as client:
        client.headers["Authorization"] = f"Bearer {fetch_token(sb, client)}"
        responses = [client.get("/v1/invoices") for _ in range(12)]
    styles = set()
    for r in responses:
        assert r.status_code == int(kind)
        assert all(h in r.headers for h in RATE_HEADERS)
        if not r.content:
            styles.add("empty")
        elif r.headers["content-type"].startswith("text/html"):
            styles.add("html")
            assert kind in r.text
        else:
            styles.add("json")
            assert r.json()["code"] == (1 if kind == "500" else 3)
    assert styles == ({"json"} if kind == "500" else {"json", "html", "empty"})
    stats = sb.stats()
    assert stats["faults_injected"] == 12 and stats["api_requests"] == 12
    assert stats["requests"]["/v1/invoices"] == {kind: 12}


def test_connection_closed_fault(make_sandbox) -> None:
    sb = make_sandbox(fault_rate=1.0, fault_kinds=("close",))
    token = fetch_token(sb)  # the token endpoint is never faulted
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(sb.base_url + "/v1/users", headers={"Authorization": f"Bearer {token}"})
    sb.configure(fault_rate=0.0)
    r = httpx.get(sb.base_url + "/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert sb.stats()["requests"]["/v1/users"] == {"closed": 1, "200": 1}


def test_fault_rate_is_partial_and_seeded(make_sandbox) -> None:
    def statuses(sb: Sandbox) -> list[int]:
        with httpx.Client(base_url=sb.base_url) as client:
            client.headers["Authorization"] = f"Bearer {fetch_token(sb, client)}"
            return [client.get("/v1/settings/taxes").status_code for _ in range(40)]

    first = statuses(make_sandbox(fault_rate=0.3, fault_kinds=("500", "503")))
    second = statuses(make_sandbox(fault_rate=0.3, fault_kinds=("500", "503")))
    assert first == second and 200 in first and {500, 503} & set(first)


def test_latency(make_sandbox) -> None:
    sb = make_sandbox(latency=0.3)
    token = fetch_token(sb)
    start = time.perf_counter()
    httpx.get(sb.base_url + "/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert time.perf_counter() - start >= 0.3
    start = time.perf_counter()
    httpx.get(sb.base_url + "/__sandbox/stats")
    fetch_token(sb)
    assert time.perf_counter() - start < 0.3  # admin and token calls are not delayed


def test_null_violations(make_sandbox) -> None:
    sb = make_sandbox(null_violations=2)
    twin = Sandbox(SandboxConfig(scale=0.05, null_violations=2))
    for endpoint in ENDPOINTS:
        model = endpoint.model
        nullable = {n for n, f in model.model_fields.items() if type(None) in
                    getattr(f.annotation, "__args__", ())}
        rows = sb.records(endpoint.name)
        bad = [r for r in rows if any(r[f] is None for f in model.model_fields
                                      if f not in nullable)]
        assert len(bad) == min(2, len(rows)), endpoint.name
        assert all(r["id"] is not None for r in rows)
        assert rows == twin.records(endpoint.name)


# ---------- mutations ----------
def test_update_bumps_modified_time_and_totals(sandbox: Sandbox, api: httpx.Client) -> None:
    before = {r["id"]: r for r in sandbox.records("invoices")}
    start = time.time() - 1
    result = sandbox.mutate("invoices", updates=3, change_children=True)
    assert len(result["updated"]) == 3 and not result["inserted"] and not result["deleted"]
    after = {r["id"]: r for r in sandbox.records("invoices")}
    assert list(after) == list(before)  # an update never moves a record
    since = dt.datetime.fromtimestamp(start, dt.timezone.utc).isoformat()
    changed = read_all(api, "/v1/invoices", modified_since=since)
    assert sorted(r["id"] for r in changed) == sorted(result["updated"])
    for record_id in result["updated"]:
        new, old = after[record_id], before[record_id]
        assert instant(new["last_modified_time"]) >= start
        assert new["line_items"] != old["line_items"]
        lines = new["line_items"]
        assert new["sub_total"] == sum(line["item_total"] for line in lines)
        assert new["total"] == new["sub_total"] - new["discount_total"] + new["tax_total"]


def test_insert_lands_at_end_and_delete_shifts(sandbox: Sandbox, api: httpx.Client) -> None:
    ids = [r["id"] for r in sandbox.records("bills")]
    result = sandbox.mutate("bills", inserts=2, delete_ids=[ids[1]])
    now = [r["id"] for r in read_all(api, "/v1/bills", per_page=9)]
    assert now == [ids[0], *ids[2:], *result["inserted"]]
    assert result["deleted"] == [ids[1]]


def test_mutation_mid_pagination(sandbox: Sandbox, api: httpx.Client) -> None:
    """A delete on a page already read shifts the next page's first record onto it."""
    ids = [r["id"] for r in sandbox.records("contacts")]
    result = sandbox.mutate("contacts", delete_ids=[ids[2]], update_ids=[ids[15]],
                            after_requests=1)
    page1 = api.get("/v1/contacts", params={"page": 1, "per_page": 10}).json()["contacts"]
    page2 = api.get("/v1/contacts", params={"page": 2, "per_page": 10}).json()["contacts"]
    assert [r["id"] for r in page1] == ids[:10]  # before the mutation
    assert [r["id"] for r in page2] == ids[11:21]  # ids[10] moved to page 1: skipped
    assert page2[4]["id"] == ids[15] and page2[4]["notes"].startswith("Edited")
    assert result == {"updated": [ids[15]], "inserted": [], "deleted": [ids[2]]}


def test_mutate_payments_and_journals_keep_invariants(sandbox: Sandbox) -> None:
    sandbox.mutate("journals", updates=3)
    sandbox.mutate("customer_payments", updates=3)
    for journal in sandbox.records("journals"):
        for side in ("debit", "credit"):
            assert sum(line["amount"] for line in journal["line_items"]
                       if line["debit_or_credit"] == side) == journal["total"]
    for payment in sandbox.records("customer_payments"):
        applied = sum(a["amount_applied"] for a in payment["applied_invoices"])
        assert payment["amount"] == applied + payment["unused_amount"]
    for endpoint in ENDPOINTS:  # every resource accepts updates, inserts and deletes
        result = sandbox.mutate(endpoint.name, updates=1, inserts=1, deletes=1)
        rows = sandbox.records(endpoint.name)
        assert rows[-1]["id"] == result["inserted"][0]
        assert result["deleted"][0] not in {r["id"] for r in rows}
        endpoint.model.model_validate(rows[-1])


def test_mutate_rejects_unknown_ids(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.mutate("invoices", update_ids=["1"])


# ---------- stats, determinism, admin API, CLI ----------
def test_stats_and_reset(sandbox: Sandbox, api: httpx.Client) -> None:
    api.get("/v1/users")
    api.get("/v1/users?page=0")
    api.get("/v1/nope")
    stats = sandbox.stats()
    assert stats["requests"]["/v1/users"] == {"200": 1, "400": 1}
    assert stats["requests"]["/v1/nope"] == {"404": 1}
    assert stats["requests"]["/oauth/v2/token"] == {"200": 1}
    assert stats["api_requests"] == 3 and stats["tokens_issued"] == 1
    sandbox.reset_stats()
    assert sandbox.stats() == {"requests": {}, "api_requests": 0, "tokens_issued": 0,
                               "faults_injected": 0, "rate_limited": 0}


def test_determinism() -> None:
    a, b, c = (Sandbox(SandboxConfig(seed=s, scale=0.02)) for s in (7, 7, 8))
    for name in BY_NAME:
        assert a.records(name) == b.records(name)
        assert a.tables[name].blobs == b.tables[name].blobs
    assert a.records("invoices") != c.records("invoices")


def test_fractional_scale_minimums() -> None:
    sb = Sandbox(SandboxConfig(scale=0.001))
    assert all(len(sb.records(e.name)) >= 1 for e in ENDPOINTS)
    assert len(sb.records("organizations")) == 1


def test_admin_api(sandbox: Sandbox, api: httpx.Client) -> None:
    admin = httpx.Client(base_url=sandbox.base_url + "/__sandbox")
    r = admin.post("/config", json={"latency": 0.01, "rate_limit": 50})
    assert r.status_code == 200 and r.json()["rate_limit"] == 50
    assert admin.get("/config").json()["latency"] == 0.01
    assert api.get("/v1/users").headers["X-Rate-Limit-Limit"] == "50"
    result = admin.post("/mutate", json={"resource": "items", "updates": 1, "inserts": 1})
    assert result.status_code == 200 and len(result.json()["inserted"]) == 1
    records = json.loads(admin.get("/records/items").content, parse_float=Decimal)
    assert records == sandbox.records("items") and records[-1]["id"] == result.json()["inserted"][0]
    assert admin.get("/stats").json()["api_requests"] == 1  # admin calls are not counted
    assert admin.post("/revoke-tokens").json() == {"revoked": 1}
    assert api.get("/v1/users").status_code == 401
    assert admin.post("/reset-stats").status_code == 200
    assert admin.get("/stats").json()["api_requests"] == 0
    assert admin.post("/config", json={"seed": 3}).status_code == 400
    assert admin.post("/mutate", json={"resource": "nope"}).status_code == 400
    assert admin.post("/config", content=b"[1]").status_code == 400
    assert admin.get("/nope").status_code == 404
    assert "/__sandbox/stats" not in sandbox.stats()["requests"]
    admin.close()


def test_configure_rejects_fixed_settings(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.configure(scale=2)
    with pytest.raises(ValueError):
        SandboxConfig(fault_kinds=("418",))


def test_method_not_allowed(api: httpx.Client) -> None:
    assert api.post("/v1/invoices").status_code == 405
    assert api.get("/oauth/v2/token").status_code == 405


def test_cli_parse_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_CLIENT_ID", "env-client")
    config = parse_args(["--port", "0", "--scale", "0.5", "--rate-limit", "100",
                         "--fault-kinds", "500,close", "--token-max-uses", "3"])
    assert (config.client_id, config.scale, config.rate_limit) == ("env-client", 0.5, 100)
    assert config.fault_kinds == ("500", "close") and config.token_max_uses == 3
    assert config.client_secret == DEMO_CLIENT_SECRET and config.host == "127.0.0.1"
