"""The columnar path stages exactly what pydantic validation would, or declines.

Every body here goes through both paths into two DuckDB warehouses, which must end
up identical (tables, child tables, quarantine); and wherever the columnar path took
a page, pydantic must have accepted every record on it, and the page's ``_extra``
columns hold text exactly where a record or item had undocumented fields.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import duckdb
import pytest
from pydantic import Field

from finance_assets.endpoints import ENDPOINTS, Endpoint
from finance_assets.models import DecimalType, Resource
from finance_assets.records import columnar
from finance_assets.records.columnar import ColumnarPage
from finance_assets.records.page_columns import columns_from_records
from finance_assets.records.validation import validate_page
from finance_assets.sandbox.data import Generator
from finance_assets.sandbox.store import render
from finance_assets.schema import EXTRA_COLUMN, REJECTED_TABLE, Bound, field_specs, table_names
from finance_assets.sync import key_range
from finance_assets.warehouse import Warehouse

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
    return [f.name for f in field_specs(endpoint.model) if f.kind == kind]


def _first(endpoint: Endpoint, *kinds: str) -> str | None:
    for kind in kinds:
        if names := [n for n in _fields(endpoint, kind) if n != "id"]:
            return names[0]
    return None


def _bounded(endpoint: Endpoint, operator: str) -> str | None:
    fields = field_specs(endpoint.model)
    return next((f.name for f in fields if any(b.operator == operator for b in f.bounds)), None)


def _patterned(endpoint: Endpoint) -> str | None:
    return next((f.name for f in field_specs(endpoint.model) if f.pattern), None)


def _choice(endpoint: Endpoint) -> str | None:
    return next((f.name for f in field_specs(endpoint.model) if f.choices), None)


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
    return next((f.name for f in field_specs(e.model) if f.scale == 2), None)


def _text(e: Endpoint) -> str | None:
    """A free-text field (no pattern, no choices)."""
    fields = field_specs(e.model)
    plain = (f.name for f in fields if f.kind == "string" and not (f.pattern or f.choices))
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
    "int below bound": _set(lambda e: _bounded(e, "ge"), -1),
    "decimal at gt bound": _set(lambda e: _bounded(e, "gt"), 0),
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


def _by_pydantic(endpoint: Endpoint, body: bytes) -> tuple[list, list] | None:
    """What the pydantic path makes of a body: (valid, rejected), or None if not JSON."""
    try:
        decoded = json.loads(body, parse_float=Decimal)
    except ValueError:
        return None
    records = decoded.get(endpoint.data_selector) if isinstance(decoded, dict) else None
    return validate_page(endpoint.model, records) if isinstance(records, list) else None


def _with_undocumented_envelope_key(body: bytes) -> bytes:
    """The body with a key the contract does not list beside ``page_context``: the
    strict read refuses it, so the records are read leniently and checked key by key."""
    assert body.endswith(b"}")
    return body[:-1] + b',"request_id":"r-1"}'


def _has_undocumented_fields(page: ColumnarPage) -> bool:
    """Whether any record or item on the page has ``_extra`` text."""
    tables = [page.columns.parent, *page.columns.children.values()]
    return any(t.column(EXTRA_COLUMN).null_count < t.num_rows for t in tables)


@pytest.mark.parametrize("envelope_key", [False, True], ids=["strict read", "lenient read"])
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_columnar_path_stages_what_pydantic_would(endpoint: Endpoint, envelope_key: bool) -> None:
    """Either read (strict; or lenient, after the strict one refused an undocumented
    envelope key) stages what pydantic would, or declines the page."""
    read = columnar.reader_for(endpoint)
    assert read is not None, f"{endpoint.name}: the columnar path does not cover its model"
    base = _records(endpoint, 12)
    if len(base) < 4:
        base = base * 4  # tiny resources: reuse records (ids are replaced)
    bodies = _bodies(endpoint, base)
    if envelope_key:
        bodies = {name: _with_undocumented_envelope_key(b) for name, b in bodies.items()}
    taken, declined = [], []
    columnar_conn, pydantic_conn = duckdb.connect(), duckdb.connect()
    with (
        Warehouse(columnar_conn).writer(endpoint, LOADED_AT) as columnar_writer,
        Warehouse(pydantic_conn).writer(endpoint, LOADED_AT) as pydantic_writer,
    ):
        for name, body in bodies.items():
            by_pydantic = _by_pydantic(endpoint, body)
            page = read(body)
            if page is None:
                declined.append(name)
            else:
                taken.append(name)
                assert by_pydantic is not None, f"{name}: taken, yet json.loads refuses the body"
                valid, bad = by_pydantic
                assert not bad, f"{name}: taken, yet pydantic rejects a record: {bad[0].reason}"
                items = [i for v in valid for c in endpoint.children for i in getattr(v, c) or ()]
                extras = any(v.model_extra for v in [*valid, *items])
                assert _has_undocumented_fields(page) == extras, name
                assert page.size == len(valid)
                columnar_writer.add(page.columns)
            if by_pydantic is not None:
                valid, bad = by_pydantic
                pydantic_writer.add(columns_from_records(endpoint, valid))
                pydantic_writer.reject(bad)
                if page is None:
                    columnar_writer.add(columns_from_records(endpoint, valid))
                    columnar_writer.reject(bad)
    assert _tables(columnar_conn, endpoint) == _tables(pydantic_conn, endpoint)
    # The columnar path must carry the ordinary cases, or it saves nothing.
    ordinary = {
        "clean", "empty page", "amount at the edge", "text with escapes", "lines empty",
        "null in a non-nullable field", "choice null", "amount as string", "time half second",
        "extra field", "line extra field",
    }
    missed = (ordinary & set(bodies)) - set(taken)
    assert not missed, f"declined: {sorted(missed)}"
    if "extra field" in taken:  # kept as pydantic keeps it (the tables above agree)
        extra = columnar_conn.execute(f"SELECT count(_extra) FROM {table_names(endpoint)[0]}")
        assert extra.fetchone() == (1,)


def test_columnar_path_takes_every_sandbox_page(make_sandbox) -> None:
    """At the sandbox's normal mix every page is taken, those holding an undocumented
    field (a few per resource, by design) too, with that field in ``_extra``."""
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
        read = columnar.reader_for(endpoint)
        assert read is not None
        page, more = 1, True
        while more:
            response = httpx.get(
                sb.base_url + endpoint.path,
                params={"page": page, "per_page": 50},
                headers={"Authorization": f"Bearer {token}"},
            )
            body = response.content
            decoded = read(body)
            records = json.loads(body, parse_float=Decimal)[endpoint.data_selector]
            extras = any(v.model_extra for v in validate_page(endpoint.model, records)[0])
            lines_extras = b"project_code" in body
            assert decoded is not None, (endpoint.name, page)
            where = (endpoint.name, page)
            assert _has_undocumented_fields(decoded) == (extras or lines_extras), where
            taken += 1
            total += 1
            more = json.loads(body)["page_context"]["has_more_page"]
            page += 1
    assert taken == total > 16, (taken, total)


def test_a_pass_stops_trying_where_every_page_is_declined() -> None:
    """An API whose every page the columnar path declines: after a few declines the pass
    parses only a sample of pages twice; a page taken again resumes the columnar path."""
    endpoint = next(e for e in ENDPOINTS if e.name == "contacts")
    records = _records(endpoint, 10)
    bad = envelope(endpoint, [render({**r, "id": "12a"}) for r in records])
    clean = envelope(endpoint, [render(r) for r in records])
    assert isinstance(columnar.reader_for_pass(endpoint), columnar.SyncPassReader)
    reader = columnar.reader_for(endpoint)
    assert reader is not None
    tried: list[bytes] = []

    def counted(body: bytes) -> ColumnarPage | None:
        tried.append(body)
        return reader(body)

    read = columnar.SyncPassReader(counted)
    assert all(read(bad) is None for _ in range(200))
    assert len(tried) <= 8 + 200 // 16 + 1  # 8 in a row, then one page in 16
    while read(clean) is None:  # skipped until the next sampled page
        pass
    before = len(tried)
    assert all(read(clean) is not None for _ in range(5))
    assert len(tried) == before + 5  # taken again: every page is tried


def test_a_pages_key_range_is_the_same_from_columns_and_models() -> None:
    """Full refresh's seen ranges: the columnar page keys only its end rows in Python."""
    endpoint = next(e for e in ENDPOINTS if e.name == "invoices")
    read = columnar.reader_for(endpoint)
    assert read is not None
    records = _records(endpoint, 40)
    for k in (5, 8, 20):  # ties at both ends: the id decides (numerically)
        records[k]["created_time"] = "2000-01-01T00:00:00Z"
        records[k + 1]["created_time"] = "2099-01-01T05:00:00.5+05:00"
    records[8]["id"], records[20]["id"] = "99", "100000000000000000001"
    records[9]["id"], records[21]["id"] = "98", "100000000000000000002"
    body = envelope(endpoint, [render(r) for r in records])
    decoded = read(body)
    assert decoded is not None
    valid, bad = validate_page(endpoint.model, json.loads(body, parse_float=Decimal)["invoices"])
    assert not bad
    from_columns = key_range(decoded.columns)
    from_models = key_range(columns_from_records(endpoint, valid))
    assert from_columns == from_models and from_columns is not None
    low, high = from_columns
    assert low.endswith("99".zfill(40)) and high.endswith("100000000000000000002".zfill(40))
    no_times = read(envelope(endpoint, [render({**r, "created_time": None}) for r in records[:3]]))
    assert no_times is not None and key_range(no_times.columns) is None


def test_undocumented_fields_on_every_record_and_line_take_the_columnar_path() -> None:
    """An API that adds fields everywhere (as real ones do) stays on the columnar path,
    and stages what pydantic would: the fields in ``_extra``, exact."""
    endpoint = next(e for e in ENDPOINTS if e.name == "invoices")
    read = columnar.reader_for(endpoint)
    assert read is not None
    records = _records(endpoint, 30)
    for k, record in enumerate(records):
        record["cf_region"] = {"code": "EMEA", "weight": Decimal(f"0.{k:02d}0")}
        for line in record["line_items"]:
            line["project_code"] = f"P-{k}"
    body = envelope(endpoint, [render(r) for r in records])
    page = read(body)
    assert page is not None and _has_undocumented_fields(page)
    by_pydantic = _by_pydantic(endpoint, body)
    assert by_pydantic is not None and not by_pydantic[1]
    columnar_conn, pydantic_conn = duckdb.connect(), duckdb.connect()
    with Warehouse(columnar_conn).writer(endpoint, LOADED_AT) as columnar_writer:
        columnar_writer.add(page.columns)
    with Warehouse(pydantic_conn).writer(endpoint, LOADED_AT) as pydantic_writer:
        pydantic_writer.add(columns_from_records(endpoint, by_pydantic[0]))
    assert _tables(columnar_conn, endpoint) == _tables(pydantic_conn, endpoint)
    extras = columnar_conn.execute("SELECT _extra FROM finance.invoices ORDER BY id").fetchall()
    assert extras[0] == ('{"cf_region":{"code":"EMEA","weight":0.000}}',)


class Gadget(Resource):
    """A record with a constraint the columnar path does not mirror (a minimum length)."""

    code: Annotated[str, Field(min_length=2)]
    price: Annotated[Decimal, Field(max_digits=9, decimal_places=2, ge=0), DecimalType(9, 2)]


def test_a_constraint_not_mirrored_leaves_the_model_to_pydantic() -> None:
    """The field description keeps what it does not understand: validation enforces it,
    and the columnar path declines the model rather than load what pydantic would not."""
    gadgets = Endpoint("gadgets", "/v1/gadgets", "gadgets", Gadget, "Gadgets.")
    code, price = field_specs(Gadget)[-2:]
    assert len(code.other_constraints) == 1 and not price.other_constraints
    assert (price.precision, price.scale, price.bounds) == (9, 2, (Bound("ge", 0),))
    assert columnar.reader_for(gadgets) is None and columnar.reader_for_pass(gadgets) is None
    times = {"created_time": "2026-01-01T00:00:00Z", "last_modified_time": "2026-01-01T00:00:00Z"}
    valid, rejected = validate_page(Gadget, [
        {"id": "1", **times, "code": "AB", "price": Decimal("1.50")},
        {"id": "2", **times, "code": "A", "price": Decimal("1.50")},
        {"id": "3", **times, "code": None, "price": Decimal("-1.00")},
    ])
    assert [v.id for v in valid] == ["1"]
    reasons = [(r.record_id, r.reason.split(":")[0]) for r in rejected]
    assert reasons == [("2", "code"), ("3", "price")]
