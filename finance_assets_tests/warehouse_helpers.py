"""Shared pieces of the warehouse, merge and check tests: records, writes, table dumps.

A test module imports these from here, never from another test module.
"""

from __future__ import annotations

import datetime as dt
import itertools
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import duckdb
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from finance_assets.endpoints import BY_NAME, Endpoint
from finance_assets.models import DecimalType
from finance_assets.records.page_columns import columns_from_records
from finance_assets.schema import child_table_name, table_name
from finance_assets.warehouse import STAGING_SCHEMA, Warehouse

LOADED_AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
INVOICES = BY_NAME["invoices"]
BILLS = BY_NAME["bills"]
_ids = itertools.count(4815000000044001)

# ---------- a record factory for any model ----------
_PATTERN_SAMPLES = {r"^[0-9]+$": None, r"^[A-Z]{3}$": "USD", r"^[A-Z]{2}$": "US"}


def _meta(field_metadata: list[Any], annotation: Any) -> tuple[Any, list[Any]]:
    """Base type and all metadata, through Optional/Annotated/nested FieldInfo."""
    meta = list(field_metadata)
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            for x in annotation.__metadata__:
                meta += [x, *x.metadata] if isinstance(x, FieldInfo) else [x]
            annotation = annotation.__origin__
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation, meta


def _value(name: str, field: FieldInfo) -> Any:
    base, meta = _meta(field.metadata, field.annotation)
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        return [make(item) for _ in range(2)]
    if typing.get_origin(base) is Literal:
        return typing.get_args(base)[0]
    if base is Decimal:
        scale = next(x for x in meta if isinstance(x, DecimalType)).scale
        return Decimal(1).scaleb(-scale) * 1234 + 1  # e.g. 13.34; always > 0
    if base is AwareDatetime:
        return dt.datetime(2026, 3, 1, 10, 15, tzinfo=IST)
    if base is dt.date:
        return dt.date(2026, 2, 28)
    if base is bool:
        return True
    if base is int:
        return 1
    if base is str:
        pattern = next((x.pattern for x in meta if getattr(x, "pattern", None)), None)
        if pattern in _PATTERN_SAMPLES:
            return _PATTERN_SAMPLES[pattern] or str(next(_ids))
        return f"{name} text"
    raise TypeError(f"no sample for {name}: {field.annotation!r}")


def make(model: type[BaseModel], **overrides: Any) -> Any:
    """A valid record of any model (every field non-null), validated like the API client."""
    data = {name: _value(name, f) for name, f in model.model_fields.items()}
    return model.model_validate({**data, **overrides})


@dataclass(frozen=True)
class Rej:
    """A rejected record as ``Writer.reject`` takes it."""

    record_id: str | None
    raw: Any
    reason: str


# ---------- writes and what the file holds ----------
def write(
    conn: duckdb.DuckDBPyConnection, endpoint: Endpoint, *pages: list[Any], flush_rows: int = 50_000
) -> Any:
    """One resource write; ``flush_rows=1`` makes every page its own staging insert."""
    with Warehouse(conn).writer(endpoint, LOADED_AT, flush_rows=flush_rows) as w:
        for page in pages:
            w.add(columns_from_records(endpoint, page))
    return w.stats


def dump(conn: duckdb.DuckDBPyConnection, endpoint: Endpoint) -> dict[str, list[tuple]]:
    """Every row of the resource's tables, ordered, for exact before/after comparisons."""
    out = {}
    for t in [table_name(endpoint), *(child_table_name(endpoint, c) for c in endpoint.children)]:
        out[t] = conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
    return out


def finance_tables(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every table of the ``finance`` schema (data, quarantine, sync state), sorted rows."""
    names = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'finance' ORDER BY 1"
    ).fetchall()
    return {
        t: conn.execute(f'SELECT * FROM finance."{t}" ORDER BY ALL').fetchall() for (t,) in names
    }


def staging_tables(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Staging tables in the file and their committed rows, as any other cursor sees them."""
    with conn.cursor() as other:
        names = other.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ? ORDER BY 1",
            [STAGING_SCHEMA],
        ).fetchall()
        return {
            t: other.execute(f'SELECT count(*) FROM "{STAGING_SCHEMA}"."{t}"').fetchone()[0]
            for (t,) in names
        }


def temp_tables(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0]
