"""Shared pieces of the warehouse, merge and check tests: records, writes, table dumps.

A test module imports these from here, never from another test module.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
from pydantic import BaseModel

from finance_assets.endpoints import BY_NAME, Endpoint
from finance_assets.records.page_columns import columns_from_records
from finance_assets.schema import FieldSpec, child_table_name, field_specs, table_name
from finance_assets.warehouse import STAGING_SCHEMA, Warehouse

LOADED_AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
INVOICES = BY_NAME["invoices"]
BILLS = BY_NAME["bills"]
_ids = itertools.count(4815000000044001)

# ---------- a record factory for any model ----------
_PATTERN_SAMPLES = {r"^[0-9]+$": None, r"^[A-Z]{3}$": "USD", r"^[A-Z]{2}$": "US"}


def _value(field: FieldSpec) -> Any:
    """A valid, non-null sample of a field, from the project's own description of it."""
    if field.item_model is not None:
        return [make(field.item_model) for _ in range(2)]
    if field.choices:
        return field.choices[0]
    if field.kind == "decimal":
        assert field.scale is not None
        return Decimal(1).scaleb(-field.scale) * 1234 + 1  # e.g. 13.34; always > 0
    if field.kind == "timestamp":
        return dt.datetime(2026, 3, 1, 10, 15, tzinfo=IST)
    if field.kind == "date":
        return dt.date(2026, 2, 28)
    if field.kind == "bool":
        return True
    if field.kind == "int":
        return 1
    if field.pattern in _PATTERN_SAMPLES:
        return _PATTERN_SAMPLES[field.pattern] or str(next(_ids))
    return f"{field.name} text"


def make(model: type[BaseModel], **overrides: Any) -> Any:
    """A valid record of any model (every field non-null), validated like the API client."""
    data = {f.name: _value(f) for f in field_specs(model)}
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
