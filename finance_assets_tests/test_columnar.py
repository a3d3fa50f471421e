"""The columnar fast path stages exactly what pydantic validation would, or declines.

Every body here goes through both paths into two DuckDB warehouses, which must end
up identical (tables, child tables, quarantine); and wherever the fast path took a
page, pydantic must have accepted every record on it, and the page says whether
any record or item had undocumented fields.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from finance_assets import columnar
from finance_assets.api import Page
from finance_assets.endpoints import ENDPOINTS, Endpoint
from finance_assets.sandbox.data import Generator
from finance_assets.sandbox.store import render
from finance_assets.schema import table_names
from finance_assets.sync import _key_range
from finance_assets.validation import validate_page
from finance_assets.warehouse import REJECTED_TABLE, Warehouse

LOADED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
Record = dict[str, Any]


def envelope(endpoint: Endpoint, blobs: list[bytes], more: bool = False) -> bytes:
    """A list response as the sandbox (and the contract) writes it."""
    return (
        b'{"code":0,"message":"success","%s":[%s],"page_context":'
        b'{"page":1,"per_page":200,"has_more_page":%s}}'
        % (endpoint.data_selector.encode(), b",".join(blobs), b"true" if more else b"false")
    )


def _fields(endpoint: Endpoint, kind: str) -> list[str]:
    return [r.name for r in columnar.rules(endpoint.model) if r.kind == kind]


def _first(endpoint: Endpoint, *kinds: str) -> str | None:
    for kind in kinds:
        if names := [n for n in _fields(endpoint, kind) if n != "id"]:
            return names[0]
    return None


def _bounded(endpoint: Endpoint, fn: str) -> str | None:
    return next(
        (r.name for r in columnar.rules(endpoint.model) if any(b[0] == fn for b in r.bounds)),
        None,
    )


def _patterned(endpoint: Endpoint) -> str | None:
    return next((r.name for r in columnar.rules(endpoint.model) if r.pattern), None)


def _choice(endpoint: Endpoint) -> str | None:
    return next((r.name for r in columnar.rules(endpoint.model) if r.choices), None)


def _lines(record: Record) -> list[Record]:
    return next((v for v in record.values() if isinstance(v, list) and v), [])


# Mutations of one record: a dict edit (None: not applicable to this endpoint).
Edit = Callable[[Endpoint, Record], Record | None]


def _set(field_of: Callable[[Endpoint], str | None], value: Any) -> Edit:
    def edit(endpoint: Endpoint, record: Record) -> Record | None:
        name = field_of(endpoint)
        if name is None:
            return None
        record[name] = value
        return record

    return edit


def _drop(field_of: Callable[[Endpoint], str | None]) -> Edit:
    def edit(endpoint: Endpoint, record: Record) -> Record | None:
        name = field_of(endpoint)
        if name is None:
            return None
        del record[name]
        return record

    return edit


def _line(change: Callable[[Record], None]) -> Edit:
    def edit(endpoint: Endpoint, record: Record) -> Record | None:
        lines = _lines(record)
        if not lines:
            return None
        change(lines[0])
        return record

    return edit


def _amount(e: Endpoint) -> str | None:
    return next((r.name for r in columnar.rules(e.model) if r.scale == 2), None)


def _text(e: Endpoint) -> str | None:
    """A free-text field (no pattern, no choices)."""
    rules = columnar.rules(e.model)
    plain = (r.name for r in rules if r.kind == "string" and not (r.pattern or r.choices))
    return next(plain, None)


EDITS: dict[str, Edit] = {
    "clean": lambda e, r: r,
    "null in a non-nullable field": _set(_text, None),
    "missing field": _drop(_text),
    "missing created_time": _drop(lambda e: "created_time"),
    "missing id": _drop(lambda e: "id"),
    "null id": _set(lambda e: "id", None),
    "id not digits": _set(lambda e: "id", "12a"),
    "id above 2^64": _set(lambda e: "id", str(2**64 + 7)),
    "amount as string": _set(_amount, "12.50"),
    "amount with spaces": _set(_amount, " 12.50"),
    "amount 3 places": _set(_amount, Decimal("1.234")),
    "amount trailing zeros": _set(_amount, Decimal("1.2300")),
    "amount 17 whole digits": _set(_amount, Decimal("12345678901234567.5")),
    "amount at the edge": _set(_amount, Decimal("9999999999999999.99")),
    "amount exponent": _set(_amount, Decimal("1E+2")),
    "amount negative zero": _set(_amount, Decimal("-0.00")),
    "amount as bool": _set(_amount, True),
    "amount as object": _set(_amount, {"value": 1}),
    "text as number": _set(_text, 5),
    "text as bool": _set(_text, False),
    "text with escapes": _set(_text, 'a "quoted":b \\":c \\ \u00e9 \U0001f680 \n'),
    "pattern broken": _set(_patterned, "1x"),
    "choice unknown": _set(_choice, "unknown"),
    "choice other case": _set(_choice, "ACTIVE"),
    "choice null": _set(_choice, None),
    "int as float": _set(lambda e: _first(e, "int"), Decimal("5.0")),
    "int as string": _set(lambda e: _first(e, "int"), "5"),
    "int below bound": _set(lambda e: _bounded(e, "greater_equal"), -1),
    "decimal at gt bound": _set(lambda e: _bounded(e, "greater"), 0),
    "bool as string": _set(lambda e: _first(e, "bool"), "true"),
    "bool as int": _set(lambda e: _first(e, "bool"), 1),
    "date impossible": _set(lambda e: _first(e, "date"), "2024-02-30"),
    "date unpadded": _set(lambda e: _first(e, "date"), "2024-2-3"),
    "date as datetime": _set(lambda e: _first(e, "date"), "2024-02-03T00:00:00Z"),
    "date as number": _set(lambda e: _first(e, "date"), 20240203),
    "date year 1": _set(lambda e: _first(e, "date"), "0001-01-01"),
    "time naive": _set(lambda e: _first(e, "timestamp"), "2024-01-01T10:00:00"),
    "time with space": _set(lambda e: _first(e, "timestamp"), "2024-01-01 10:00:00Z"),
    "time lower z": _set(lambda e: _first(e, "timestamp"), "2024-01-01T10:00:00z"),
    "time 7 digits": _set(lambda e: _first(e, "timestamp"), "2024-01-01T10:00:00.1234567Z"),
    "time half second": _set(lambda e: _first(e, "timestamp"), "2024-01-01T10:00:00.5+05:30"),
    "time offset 24h": _set(lambda e: _first(e, "timestamp"), "2024-01-01T10:00:00+24:00"),
    "time unix number": _set(lambda e: _first(e, "timestamp"), 1700000000),
    "time leap second": _set(lambda e: _first(e, "timestamp"), "2016-12-31T23:59:60Z"),
    "extra field": _set(lambda e: "cf_extra", {"n": Decimal("0.1")}),
    "lines null": _set(lambda e: next(iter(e.children), None), None),
    "lines empty": _set(lambda e: next(iter(e.children), None), []),
    "line null item": _line(lambda line: line.clear()),  # replaced below by a null
    "line missing field": _line(lambda line: line.pop(next(iter(line)))),
    "line extra field": _line(lambda line: line.update(project_code="P-1")),
    "line amount 3 places": _line(
        lambda line: line.update({k: Decimal("1.001") for k in line if k.endswith("total")})
    ),
}

# Edits of the rendered record text (what a dict cannot express).
TEXT_EDITS: dict[str, Callable[[bytes], bytes]] = {
    "space before colon": lambda b: b.replace(b'"id":', b'"id" :', 1),
    "escaped key": lambda b: b.replace(b'"id":', b'"\\u0069d":', 1),
    "duplicate key": lambda b: b.replace(
        b'"id":', b'"created_time":"2024-01-01T00:00:00Z","id":', 1
    ),
    "record null": lambda b: b"null",
    "record number": lambda b: b"7",
    "line null": lambda b: b.replace(b"[{", b"[null,{", 1),
    "trailing garbage": lambda b: b + b"}",
}


@functools.cache
def _generated() -> dict[str, list[Record]]:
    return Generator(seed=7, scale=0.05).generate()


def _records(endpoint: Endpoint, count: int) -> list[Record]:
    """Sandbox records, undocumented fields removed (the edits add their own)."""
    out = []
    for record in _generated()[endpoint.name][:count]:
        plain = {k: v for k, v in record.items() if k in endpoint.model.model_fields}
        for child, item_model in endpoint.children.items():
            if isinstance(plain.get(child), list):
                known = item_model.model_fields
                plain[child] = [{k: v for k, v in i.items() if k in known} for i in plain[child]]
        out.append(plain)
    return out


def _bodies(endpoint: Endpoint, base: list[Record]) -> dict[str, bytes]:
    clean = [render(r) for r in base[:3]]
    out: dict[str, bytes] = {"empty page": envelope(endpoint, [])}
    for k, (name, edit) in enumerate(EDITS.items()):
        record = copy.deepcopy(base[3 + k % (len(base) - 3)])
        record["id"] = str(9 * 10**20 + k)  # each edit's record has an id of its own
        edited = edit(endpoint, record)
        if edited is None:
            continue
        blob = render(edited)
        if name == "line null item":
            blob = blob.replace(b"[{}", b"[null", 1)
        out[name] = envelope(endpoint, [*clean, blob])
    for k, (name, text_edit) in enumerate(TEXT_EDITS.items()):
        record = copy.deepcopy(base[3 + k % (len(base) - 3)])
        record["id"] = str(8 * 10**20 + k)
        out[name] = envelope(endpoint, [*clean, text_edit(render(record))])
    return out


def _tables(conn: duckdb.DuckDBPyConnection, endpoint: Endpoint) -> dict[str, list[tuple]]:
    names = table_names(endpoint)
    out = {
        t: conn.execute(f"SELECT * EXCLUDE (_loaded_at) FROM {t} ORDER BY id").fetchall()
        if t == names[0]
        else conn.execute(f"SELECT * FROM {t} ORDER BY parent_id, position").fetchall()
        for t in names
    }
    out[REJECTED_TABLE] = conn.execute(
        f"SELECT id, reason, raw::VARCHAR FROM {REJECTED_TABLE} ORDER BY id, raw::VARCHAR"
    ).fetchall()
    return out


def _slow(endpoint: Endpoint, body: bytes) -> tuple[list, list] | None:
    try:
        decoded = json.loads(body, parse_float=Decimal)
    except ValueError:
        return None
    records = decoded.get(endpoint.data_selector) if isinstance(decoded, dict) else None
    return validate_page(endpoint.model, records) if isinstance(records, list) else None


@pytest.mark.parametrize("lenient", [False, True], ids=["strict-first", "lenient"])
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_fast_path_stages_what_pydantic_would(endpoint: Endpoint, lenient: bool) -> None:
    """Either way of reading (strict first, or lenient at once) stages what pydantic
    would, or declines the page."""
    decode = columnar.decoder(endpoint)
    assert decode is not None, f"{endpoint.name}: the fast path does not cover its model"
    base = _records(endpoint, 12)
    if len(base) < 4:
        base = base * 4  # tiny resources: reuse records (ids are replaced)
    bodies = _bodies(endpoint, base)
    taken, declined = [], []
    fast_conn, slow_conn = duckdb.connect(), duckdb.connect()
    with (
        Warehouse(fast_conn).writer(endpoint, LOADED_AT) as fast_writer,
        Warehouse(slow_conn).writer(endpoint, LOADED_AT) as slow_writer,
    ):
        for name, body in bodies.items():
            slow = _slow(endpoint, body)
            page = decode(body, lenient)
            if page is None:
                declined.append(name)
            else:
                taken.append(name)
                assert slow is not None, f"{name}: fast path took a body json.loads refuses"
                valid, bad = slow
                assert not bad, f"{name}: fast path took a page pydantic rejects: {bad[0].reason}"
                items = [i for v in valid for c in endpoint.children for i in getattr(v, c) or ()]
                extras = any(v.model_extra for v in [*valid, *items])
                assert page.extras == extras, name
                assert page.size == len(valid)
                fast_writer.add_columns(page.parent, page.children)
            if slow is not None:
                valid, bad = slow
                slow_writer.add(valid)
                slow_writer.reject(bad)
                if page is None:
                    fast_writer.add(valid)
                    fast_writer.reject(bad)
    assert _tables(fast_conn, endpoint) == _tables(slow_conn, endpoint)
    # The fast path must carry the ordinary cases, or it is no fast path.
    ordinary = {
        "clean", "empty page", "amount at the edge", "text with escapes", "lines empty",
        "null in a non-nullable field", "choice null", "amount as string", "time half second",
        "extra field", "line extra field",
    }
    missed = (ordinary & set(bodies)) - set(taken)
    assert not missed, f"declined: {sorted(missed)}"
    if "extra field" in taken:  # kept as pydantic keeps it (the tables above agree)
        extra = fast_conn.execute(f"SELECT count(_extra) FROM {table_names(endpoint)[0]}")
        assert extra.fetchone() == (1,)


def test_fast_path_takes_every_sandbox_page(make_sandbox) -> None:
    """At the sandbox's normal mix every page is taken, those holding an undocumented
    field (a few per resource, by design) too, and flagged as such."""
    import httpx  # noqa: PLC0415

    sb = make_sandbox(scale=0.3)
    token = httpx.post(
        sb.token_url,
        data={
            "grant_type": "refresh_token",
            "client_id": sb.client_id,
            "client_secret": sb.client_secret,
            "refresh_token": sb.refresh_token,
        },
    ).json()["access_token"]
    taken = total = 0
    for endpoint in ENDPOINTS:
        decode = columnar.decoder(endpoint)
        assert decode is not None
        page, more = 1, True
        while more:
            response = httpx.get(
                sb.base_url + endpoint.path,
                params={"page": page, "per_page": 50},
                headers={"Authorization": f"Bearer {token}"},
            )
            body = response.content
            decoded = decode(body)
            records = json.loads(body, parse_float=Decimal)[endpoint.data_selector]
            extras = any(v.model_extra for v in validate_page(endpoint.model, records)[0])
            lines_extras = b"project_code" in body
            assert decoded is not None, (endpoint.name, page)
            assert decoded.extras == (extras or lines_extras), (endpoint.name, page)
            taken += 1
            total += 1
            more = json.loads(body)["page_context"]["has_more_page"]
            page += 1
    assert taken == total > 16, (taken, total)


def test_a_pass_stops_trying_where_every_page_is_declined() -> None:
    """An API whose every page the fast path declines: after a few declines the pass
    parses only a sample of pages twice; a page taken again resumes the fast path."""
    endpoint = next(e for e in ENDPOINTS if e.name == "contacts")
    records = _records(endpoint, 10)
    bad = envelope(endpoint, [render({**r, "id": "12a"}) for r in records])
    clean = envelope(endpoint, [render(r) for r in records])
    decode = columnar.for_pass(endpoint)
    assert decode is not None
    assert all(decode(bad) is None for _ in range(200))
    assert decode.tried <= 8 + 200 // 16 + 1  # 8 in a row, then one page in 16
    while decode(clean) is None:  # skipped until the next sampled page
        pass
    tried = decode.tried
    assert all(decode(clean) is not None for _ in range(5))
    assert decode.tried == tried + 5  # taken again: every page is tried


def test_a_pages_key_range_is_the_same_from_columns_and_models() -> None:
    """Full refresh's seen ranges: the columnar page keys only its end rows in Python."""
    endpoint = next(e for e in ENDPOINTS if e.name == "invoices")
    records = _records(endpoint, 40)
    for k in (5, 8, 20):  # ties at both ends: the id decides (numerically)
        records[k]["created_time"] = "2000-01-01T00:00:00Z"
        records[k + 1]["created_time"] = "2099-01-01T05:00:00.5+05:00"
    records[8]["id"], records[20]["id"] = "99", "100000000000000000001"
    records[9]["id"], records[21]["id"] = "98", "100000000000000000002"
    body = envelope(endpoint, [render(r) for r in records])
    decoded = columnar.decoder(endpoint)(body)  # type: ignore[misc]
    assert decoded is not None
    valid, bad = validate_page(endpoint.model, json.loads(body, parse_float=Decimal)["invoices"])
    assert not bad
    fast = _key_range(Page(2, None, False, None, decoded, per_page=200), [])
    slow = _key_range(Page(2, [], False, None, per_page=200), valid)
    assert fast == slow and fast is not None
    assert fast[0].endswith("99".zfill(40)) and fast[1].endswith("100000000000000000002".zfill(40))
    assert _key_range(Page(2, None, False, None, columnar.decoder(endpoint)(  # type: ignore[misc]
        envelope(endpoint, [render({**r, "created_time": None}) for r in records[:3]])
    ), per_page=200), []) is None


def test_undocumented_fields_on_every_record_and_line_take_the_fast_path() -> None:
    """An API that adds fields everywhere (as real ones do) stays on the columnar path,
    and stages what pydantic would: the fields in ``_extra``, exact."""
    endpoint = next(e for e in ENDPOINTS if e.name == "invoices")
    records = _records(endpoint, 30)
    for k, record in enumerate(records):
        record["cf_region"] = {"code": "EMEA", "weight": Decimal(f"0.{k:02d}0")}
        for line in record["line_items"]:
            line["project_code"] = f"P-{k}"
    body = envelope(endpoint, [render(r) for r in records])
    page = columnar.decoder(endpoint)(body)  # type: ignore[misc]
    assert page is not None and page.extras
    slow = _slow(endpoint, body)
    assert slow is not None and not slow[1]
    fast_conn, slow_conn = duckdb.connect(), duckdb.connect()
    with Warehouse(fast_conn).writer(endpoint, LOADED_AT) as fast_writer:
        fast_writer.add_columns(page.parent, page.children)
    with Warehouse(slow_conn).writer(endpoint, LOADED_AT) as slow_writer:
        slow_writer.add(slow[0])
    assert _tables(fast_conn, endpoint) == _tables(slow_conn, endpoint)
    extras = fast_conn.execute("SELECT _extra FROM finance.invoices ORDER BY id").fetchall()
    assert extras[0] == ('{"cf_region":{"code":"EMEA","weight":0.000}}',)
