"""Column specs derived from the pydantic models: the one type mapping.

The warehouse (DDL, Arrow types) and the checks (nullability, Dagster column
schema) both read these specs, so a model change reaches both the same way.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from finance_assets.endpoints import Endpoint
from finance_assets.models import DecimalType

SCHEMA = "finance"
EXTRA_COLUMN = "_extra"
LOADED_AT_COLUMN = "_loaded_at"
DELETED_AT_COLUMN = "_deleted_at"
PARENT_ID_COLUMN = "parent_id"
POSITION_COLUMN = "position"
# In a page's child columns only: the parent record's row on the page.
ROW_COLUMN = "_row"
REJECTED_TABLE = f"{SCHEMA}._rejected"  # the quarantine: records the schema cannot hold
SYNC_STATE_TABLE = f"{SCHEMA}._sync_state"  # each resource's cursor and last modes

# Identifiers are spliced into SQL unquoted; allow only plain lower-case names.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")

Kind = Literal["string", "decimal", "date", "timestamp", "bool", "int", "json"]


@dataclass(frozen=True)
class ColumnSpec:
    """One warehouse column: SQL type, nullability per the model, and a description."""

    name: str
    sql_type: str
    nullable: bool
    description: str
    kind: Kind
    precision: int | None = None
    scale: int | None = None
    from_model: bool = True  # False for bookkeeping columns (_extra, parent_id, ...)
    counts: str | None = None  # for ``_<array>_count``: the nested array it counts

    @property
    def arrow_type(self) -> pa.DataType:
        """The column's Arrow type: what a page's columns hold and DuckDB scans."""
        if self.kind == "decimal":
            assert self.precision is not None and self.scale is not None
            return pa.decimal128(self.precision, self.scale)
        if self.kind == "int":
            return pa.int64() if self.sql_type == "BIGINT" else pa.int32()
        return _ARROW_TYPES[self.kind]


_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "json": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
}


def _ident(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"unsupported SQL identifier: {name!r}")
    return name


def table_name(endpoint: Endpoint) -> str:
    """Qualified parent table, e.g. ``finance.invoices``."""
    return f"{SCHEMA}.{_ident(endpoint.name)}"


def child_table_name(endpoint: Endpoint, field: str) -> str:
    """Qualified child table of a nested array, e.g. ``finance.invoices__line_items``."""
    return f"{SCHEMA}.{_ident(endpoint.name)}__{_ident(field)}"


def table_names(endpoint: Endpoint) -> list[str]:
    """The resource's parent table, then its child tables."""
    return [table_name(endpoint), *(child_table_name(endpoint, c) for c in endpoint.children)]


def q(name: str) -> str:
    """Quote an identifier for SQL (``date`` and ``position`` are keywords)."""
    return '"' + name.replace('"', '""') + '"'


def current_catalog(conn: Any) -> str:
    """Name of the connection's database (the file stem, e.g. ``finance``)."""
    row = conn.execute("SELECT current_database()").fetchone()
    return str(row[0])


def in_catalog(catalog: str, table: str) -> str:
    """``"catalog".finance.t`` for SQL: a file named ``finance.duckdb`` makes ``finance.t``
    ambiguous (catalog ``finance`` vs schema ``finance``) and DuckDB refuses it."""
    return '"' + catalog.replace('"', '""') + '".' + table


def _unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """Strip ``Optional``/``Annotated``: (base type, nullable, collected metadata)."""
    nullable = False
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            for m in annotation.__metadata__:  # Field(...) inside Annotated nests its own
                metadata.extend([m, *m.metadata] if isinstance(m, FieldInfo) else [m])
            annotation = annotation.__origin__
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"unsupported union: {annotation!r}")
            nullable = nullable or len(args) < len(typing.get_args(annotation))
            annotation = args[0]
        else:
            return annotation, nullable, metadata


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(_unwrap(annotation)[0]) is list


def _spec(name: str, field: FieldInfo) -> ColumnSpec:
    base, nullable, metadata = _unwrap(field.annotation)
    metadata = [*field.metadata, *metadata]
    null_note = "nullable" if nullable else "never null"
    if typing.get_origin(base) is Literal:
        values = ", ".join(str(v) for v in typing.get_args(base))
        return ColumnSpec(name, "VARCHAR", nullable, f"One of: {values} ({null_note}).", "string")
    if base is Decimal:
        marker = next((m for m in metadata if isinstance(m, DecimalType)), None)
        if marker is None:
            raise TypeError(f"decimal field {name!r} lacks a DecimalType marker")
        p, s = marker.precision, marker.scale
        return ColumnSpec(
            name, f"DECIMAL({p},{s})", nullable,
            f"Exact decimal, precision {p}, scale {s} ({null_note}).", "decimal", p, s,
        )
    if base is AwareDatetime or base is dt.datetime:
        return ColumnSpec(
            name, "TIMESTAMPTZ", nullable,
            f"Instant; the API's offset is normalized to UTC ({null_note}).", "timestamp",
        )
    if base is dt.date:
        return ColumnSpec(name, "DATE", nullable, f"Calendar date ({null_note}).", "date")
    if base is bool:  # before int: bool is a subclass of int
        return ColumnSpec(name, "BOOLEAN", nullable, f"Flag ({null_note}).", "bool")
    if base is int:
        return ColumnSpec(name, "BIGINT", nullable, f"Integer ({null_note}).", "int")
    if base is str:
        pattern = next((m.pattern for m in metadata if getattr(m, "pattern", None)), None)
        if pattern == r"^[0-9]+$":
            what = "Identifier (digit string, may exceed 2^63)"
        else:
            what = f"Text matching `{pattern}`" if pattern else "Text"
        return ColumnSpec(name, "VARCHAR", nullable, f"{what} ({null_note}).", "string")
    raise TypeError(f"unsupported field type for {name!r}: {field.annotation!r}")


def _described(spec: ColumnSpec, field: FieldInfo) -> ColumnSpec:
    if not field.description:
        return spec
    return ColumnSpec(**{**spec.__dict__, "description": f"{field.description} {spec.description}"})


def _count_spec(name: str, field: FieldInfo) -> ColumnSpec:
    """A nested array becomes a child table; the parent keeps its item count.

    The count is NULL when the API sent ``null`` for the array, so the nullability
    check sees a null array that would otherwise look like an empty one.
    """
    nullable = _unwrap(field.annotation)[1]
    note = "nullable" if nullable else "never null"
    return ColumnSpec(
        f"_{name}_count", "INTEGER", nullable,
        f"Items in `{name}` (rows in the child table); NULL when the API sent null ({note}).",
        "int", counts=name,
    )


@cache
def model_columns(model: type[BaseModel]) -> tuple[ColumnSpec, ...]:
    """Fields of a model in model order; a list field becomes its ``_<field>_count``."""
    return tuple(
        _count_spec(name, field)
        if _is_list(field.annotation)
        else _described(_spec(name, field), field)
        for name, field in model.model_fields.items()
    )


EXTRA_SPEC = ColumnSpec(
    EXTRA_COLUMN, "JSON", True,
    "Undocumented API fields as JSON (keys sorted, numbers exact); NULL when none.",
    "json", from_model=False,
)
LOADED_AT_SPEC = ColumnSpec(
    LOADED_AT_COLUMN, "TIMESTAMPTZ", True, "When the run that wrote this row started.",
    "timestamp", from_model=False,
)
DELETED_AT_SPEC = ColumnSpec(
    DELETED_AT_COLUMN, "TIMESTAMPTZ", True,
    "When a full refresh found the record gone from the API (soft delete); NULL while it exists.",
    "timestamp", from_model=False,
)
PARENT_ID_SPEC = ColumnSpec(
    PARENT_ID_COLUMN, "VARCHAR", True, "`id` of the parent record.", "string", from_model=False,
)
POSITION_SPEC = ColumnSpec(
    POSITION_COLUMN, "INTEGER", True, "0-based index in the parent's array.", "int",
    from_model=False,
)


def column_specs(model: type[BaseModel]) -> list[ColumnSpec]:
    """All columns of a parent table: model fields, ``_extra``, ``_loaded_at``, ``_deleted_at``."""
    return [*model_columns(model), EXTRA_SPEC, LOADED_AT_SPEC, DELETED_AT_SPEC]


def child_column_specs(item_model: type[BaseModel]) -> list[ColumnSpec]:
    """All columns of a child table: ``parent_id``, ``position``, item fields, ``_extra``."""
    return [PARENT_ID_SPEC, POSITION_SPEC, *model_columns(item_model), EXTRA_SPEC]
