"""What the models say about each field, and the warehouse columns derived from it.

``field_specs`` reads a model's annotations once into ``FieldSpec``s; everything
else asks those rather than the annotations: the warehouse columns here (SQL and
Arrow types, nullability, descriptions), the columnar path's read-and-check rules,
validation's loadable model, an endpoint's child tables and the sandbox's bad data.
A model change so reaches all of them the same way.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from finance_assets.models import DecimalType

if TYPE_CHECKING:
    import pyarrow as pa

    from finance_assets.endpoints import Endpoint

SCHEMA = "finance"
EXTRA_COLUMN = "_extra"
LOADED_AT_COLUMN = "_loaded_at"
DELETED_AT_COLUMN = "_deleted_at"
ORGANIZATION_COLUMN = "_organization"
# The organization of a deployment with one connection (the ``FINANCE_API_*`` variables),
# and of every row a warehouse held before organizations were recorded.
DEFAULT_ORGANIZATION = "default"
PARENT_ID_COLUMN = "parent_id"
POSITION_COLUMN = "position"
# In a page's child columns only: the parent record's row on the page.
ROW_COLUMN = "_row"
REJECTED_TABLE = f"{SCHEMA}._rejected"  # the quarantine: records the schema cannot hold
SYNC_STATE_TABLE = f"{SCHEMA}._sync_state"  # each resource's cursor and last modes
SOURCE_TABLE = f"{SCHEMA}._source"  # each organization's source (``warehouse/source.py``)

# Identifiers are spliced into SQL unquoted; allow only plain lower-case names.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")

Kind = Literal["string", "decimal", "date", "timestamp", "bool", "int", "json"]
FieldKind = Literal["string", "decimal", "date", "timestamp", "bool", "int", "array"]

# A field's Python type by kind (arrays and ``Literal`` choices aside), and back.
_PYTHON_TYPES: dict[FieldKind, type] = {
    "string": str,
    "decimal": Decimal,
    "date": dt.date,
    "timestamp": AwareDatetime,  # an instant: a naive time has no place on the UTC timeline
    "bool": bool,
    "int": int,
}
_KINDS: dict[type, FieldKind] = {t: k for k, t in _PYTHON_TYPES.items()}
_BOUND_OPERATORS: dict[type, str] = {Gt: "gt", Ge: "ge", Lt: "lt", Le: "le"}
# What pydantic's ``Field(pattern=..., max_digits=..., decimal_places=...)`` sets on one
# constraint object, read by attribute name.
_TEXT_AND_DIGITS = frozenset({"pattern", "max_digits", "decimal_places"})


@dataclass(frozen=True)
class Bound:
    """A limit on a number as the model declares it: ``Field(gt=0)`` is ``Bound("gt", 0)``."""

    operator: Literal["gt", "ge", "lt", "le"]
    value: Any


@dataclass(frozen=True)
class FieldSpec:
    """One field of a record model, read once from its annotation."""

    name: str
    kind: FieldKind
    nullable: bool  # the model admits null (``T | None``)
    description: str | None = None  # the model's own words for the field, if any
    precision: int | None = None  # decimals: from ``DecimalType``
    scale: int | None = None
    pattern: str | None = None  # text: a regular expression every value matches
    choices: tuple[str, ...] = ()  # text: the values a ``Literal`` allows
    bounds: tuple[Bound, ...] = ()  # numbers
    item_model: type[BaseModel] | None = None  # arrays: the model of one item
    # Pydantic constraints not described above: validation keeps them, and the
    # columnar path does not read a model that has any.
    other_constraints: tuple[Any, ...] = ()

    @property
    def value_type(self) -> Any:
        """The type pydantic checks a value against, constraints and null aside."""
        if self.item_model is not None:
            return list[self.item_model]  # type: ignore[name-defined]
        if self.choices:
            return Literal[self.choices]
        return _PYTHON_TYPES[self.kind]


def _unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """Strip ``Optional`` and ``Annotated``: (value type, admits null, constraints)."""
    nullable = False
    constraints: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *metadata = typing.get_args(annotation)
            for m in metadata:  # ``Field(...)`` inside ``Annotated`` holds its own
                constraints.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"unsupported union: {annotation!r}")
            nullable = nullable or len(args) < len(typing.get_args(annotation))
            annotation = args[0]
        else:
            return annotation, nullable, constraints


def _text_and_digits(constraint: Any) -> dict[str, Any] | None:
    """The pattern and digit limits a constraint sets, or None if it sets anything else."""
    values = getattr(constraint, "__dict__", None)
    if not values or not values.keys() <= _TEXT_AND_DIGITS:
        return None
    return dict(values) if isinstance(values.get("pattern", ""), str) else None


def _typed(name: str, value_type: Any, decimal: DecimalType | None) -> dict[str, Any]:
    """The FieldSpec attributes that follow from the value's type."""
    origin = typing.get_origin(value_type)
    if origin is list:
        (item,) = typing.get_args(value_type)
        if not (isinstance(item, type) and issubclass(item, BaseModel)):
            raise TypeError(f"{name}: an array's items must be a model, not {item!r}")
        return {"kind": "array", "item_model": item}
    if origin is Literal:
        choices = typing.get_args(value_type)
        if not all(isinstance(c, str) for c in choices):
            raise TypeError(f"{name}: choices must be text: {choices!r}")
        return {"kind": "string", "choices": choices}
    kind = _KINDS.get(value_type)
    if kind is None:
        raise TypeError(f"unsupported field type for {name!r}: {value_type!r}")
    if kind != "decimal":
        return {"kind": kind}
    if decimal is None:
        raise TypeError(f"decimal field {name!r} lacks a DecimalType marker")
    return {"kind": kind, "precision": decimal.precision, "scale": decimal.scale}


def _field_spec(name: str, field: FieldInfo) -> FieldSpec:
    value_type, nullable, inner = _unwrap(field.annotation)
    decimal: DecimalType | None = None
    given: dict[str, Any] = {}
    bounds: list[Bound] = []
    other: list[Any] = []
    for c in [*field.metadata, *inner]:
        if isinstance(c, DecimalType):
            decimal = c
        elif type(c) in _BOUND_OPERATORS:
            operator = _BOUND_OPERATORS[type(c)]
            bounds.append(Bound(operator, getattr(c, operator)))  # type: ignore[arg-type]
        elif (values := _text_and_digits(c)) is not None:
            given.update(values)
        else:
            other.append(c)
    spec = FieldSpec(
        name, nullable=nullable, description=field.description, pattern=given.get("pattern"),
        bounds=tuple(bounds), other_constraints=tuple(other),
        **_typed(name, value_type, decimal),
    )
    # Validation checks digits as the DecimalType says; a model saying otherwise is a typo.
    digits = (given.get("max_digits", spec.precision), given.get("decimal_places", spec.scale))
    if digits != (spec.precision, spec.scale):
        raise TypeError(f"{name}: max_digits/decimal_places {digits} disagree with {decimal}")
    return spec


@cache
def field_specs(model: type[BaseModel]) -> tuple[FieldSpec, ...]:
    """The model's fields in model order, each described once (``TypeError`` for a type
    the warehouse cannot hold)."""
    return tuple(_field_spec(name, field) for name, field in model.model_fields.items())


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
        import pyarrow as pa  # here: reading the endpoint list needs no Arrow

        if self.kind == "decimal":
            assert self.precision is not None and self.scale is not None
            return pa.decimal128(self.precision, self.scale)
        return _arrow_types()[self.sql_type]


@cache
def _arrow_types() -> dict[str, pa.DataType]:
    import pyarrow as pa

    return {
        "VARCHAR": pa.string(),
        "JSON": pa.string(),
        "DATE": pa.date32(),
        "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
        "BOOLEAN": pa.bool_(),
        "BIGINT": pa.int64(),
        "INTEGER": pa.int32(),
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


def quoted(name: str) -> str:
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


def _what(field: FieldSpec) -> tuple[str, str]:
    """A field's SQL type and what its values are, in words."""
    if field.choices:
        return "VARCHAR", "One of: " + ", ".join(field.choices)
    if field.kind == "decimal":
        p, s = field.precision, field.scale
        return f"DECIMAL({p},{s})", f"Exact decimal, precision {p}, scale {s}"
    if field.kind == "timestamp":
        return "TIMESTAMPTZ", "Instant; the API's offset is normalized to UTC"
    if field.kind == "date":
        return "DATE", "Calendar date"
    if field.kind == "bool":
        return "BOOLEAN", "Flag"
    if field.kind == "int":
        return "BIGINT", "Integer"
    if field.pattern == r"^[0-9]+$":
        return "VARCHAR", "Identifier (digit string, may exceed 2^63)"
    return "VARCHAR", f"Text matching `{field.pattern}`" if field.pattern else "Text"


def field_column(field: FieldSpec) -> ColumnSpec:
    """The field's column in its table; a nested array becomes a child table, and the
    parent keeps ``_<field>_count``.

    The count is NULL when the API sent ``null`` for the array, so the nullability
    check sees a null array that would otherwise look like an empty one.
    """
    note = "nullable" if field.nullable else "never null"
    if field.kind == "array":
        return ColumnSpec(
            f"_{field.name}_count", "INTEGER", field.nullable,
            f"Items in `{field.name}` (rows in the child table); NULL when the API sent null "
            f"({note}).",
            "int", counts=field.name,
        )
    sql_type, what = _what(field)
    kind: Kind = field.kind  # type: ignore[assignment]  # every kind but "array"
    description = f"{what} ({note})."
    if field.description:
        description = f"{field.description} {description}"
    return ColumnSpec(
        field.name, sql_type, field.nullable, description, kind, field.precision, field.scale
    )


@cache
def model_columns(model: type[BaseModel]) -> tuple[ColumnSpec, ...]:
    """Fields of a model in model order; a list field becomes its ``_<field>_count``."""
    return tuple(field_column(f) for f in field_specs(model))


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
ORGANIZATION_SPEC = ColumnSpec(
    ORGANIZATION_COLUMN,
    "VARCHAR",
    True,
    "The organization (set of books) the record belongs to: its key in the deployment's "
    "organizations, `default` with one connection.",
    "string",
    from_model=False,
)
PARENT_ID_SPEC = ColumnSpec(
    PARENT_ID_COLUMN, "VARCHAR", True, "`id` of the parent record.", "string", from_model=False,
)
POSITION_SPEC = ColumnSpec(
    POSITION_COLUMN, "INTEGER", True, "0-based index in the parent's array.", "int",
    from_model=False,
)


def column_specs(model: type[BaseModel]) -> list[ColumnSpec]:
    """All columns of a parent table: model fields, ``_extra``, ``_loaded_at``,
    ``_deleted_at``, ``_organization`` (last: an upgraded table gains it at the end)."""
    return [*model_columns(model), EXTRA_SPEC, LOADED_AT_SPEC, DELETED_AT_SPEC, ORGANIZATION_SPEC]


def child_column_specs(item_model: type[BaseModel]) -> list[ColumnSpec]:
    """All columns of a child table: ``parent_id``, ``position``, item fields, ``_extra``,
    ``_organization``."""
    return [
        PARENT_ID_SPEC,
        POSITION_SPEC,
        *model_columns(item_model),
        EXTRA_SPEC,
        ORGANIZATION_SPEC,
    ]
