"""The columnar path: a page's JSON body straight to validated Arrow columns.

pyarrow's JSON reader parses the body in C++ (without the GIL, so endpoints load in
parallel) against an explicit schema derived from the models; decimals are converted
from the number's own text, never through a float. The page is then validated with
vectorised checks that mirror the loadable pydantic model.

The columnar path only takes a page it can vouch for: every record has every field
(an absent field is an error for the model, a null is not), every value of the
kind and within the bounds the model demands. Undocumented fields are kept as
``_extra`` JSON text, exactly as the pydantic path keeps them. For anything else
(and for any model with a constraint this module does not mirror) it answers None,
and the caller validates record by record with pydantic, which also explains each
problem. Both paths stage identical rows; tests hold them to it.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import BaseModel

from finance_assets.endpoints import Endpoint
from finance_assets.records.json_text import undocumented_fields_json
from finance_assets.records.page_columns import PageColumns
from finance_assets.schema import (
    EXTRA_COLUMN,
    POSITION_COLUMN,
    ROW_COLUMN,
    FieldSpec,
    field_column,
    field_specs,
)

_DATE = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
# RFC 3339 with an offset (the model wants aware instants), at most microseconds.
_INSTANT = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_EARLIEST, _LATEST = dt.date(1, 1, 2), dt.date(9999, 12, 30)  # offsets stay in range
_COMPARE: dict[str, Callable[..., pa.Array]] = {
    "gt": pc.greater, "ge": pc.greater_equal, "lt": pc.less, "le": pc.less_equal,
}


class _NotMirrored(TypeError):
    """A model feature the checks here do not mirror (the endpoint then uses pydantic)."""


@dataclass(frozen=True)
class _FieldRule:
    """How one field is read from JSON and checked, in Arrow terms (built once per model)."""

    field: FieldSpec
    read_type: pa.DataType  # what the JSON reader produces
    items: tuple[_FieldRule, ...] = ()  # arrays: the item model's rules
    choices: pa.Array | None = None
    bounds: tuple[tuple[Callable[..., pa.Array], pa.Scalar], ...] = ()
    # Decimals: values must stay below this in absolute value, compared as ``wide``
    # (the reader accepts more whole digits than the precision leaves).
    digits_limit: pa.Scalar | None = None
    wide: pa.DataType | None = None


def _rule(field: FieldSpec) -> _FieldRule:
    if field.other_constraints:
        raise _NotMirrored(f"{field.name}: {field.other_constraints!r}")
    if field.bounds and field.kind not in ("int", "decimal"):
        raise _NotMirrored(f"{field.name}: bounds on a {field.kind}")
    if field.item_model is not None:
        items = _rules(field.item_model)
        if any(i.items for i in items):
            raise _NotMirrored(f"{field.name}: arrays inside its items")
        struct = pa.struct([(i.field.name, i.read_type) for i in items])
        return _FieldRule(field, pa.list_(struct), items=items)
    # Dates and instants are read as text, then checked and parsed here.
    read = pa.string() if field.kind in ("date", "timestamp") else field_column(field).arrow_type
    choices = pa.array(field.choices, pa.string()) if field.choices else None
    bounds = tuple((_COMPARE[b.operator], pa.scalar(b.value, type=read)) for b in field.bounds)
    if field.kind != "decimal":
        return _FieldRule(field, read, choices=choices, bounds=bounds)
    assert field.precision is not None and field.scale is not None
    wide = pa.decimal128(38, field.scale)
    limit = pa.scalar(Decimal(10) ** (field.precision - field.scale), type=wide)
    return _FieldRule(field, read, bounds=bounds, digits_limit=limit, wide=wide)


@functools.cache
def _rules(model: type[BaseModel]) -> tuple[_FieldRule, ...]:
    return tuple(_rule(f) for f in field_specs(model))


@dataclass(frozen=True)
class ColumnarPage:
    """A page the columnar path vouches for, as the columns the warehouse stages."""

    columns: PageColumns
    has_more: bool

    @property
    def size(self) -> int:
        """Records on the page."""
        return self.columns.size


def _fails(mask: pa.Array) -> bool:
    """True if any non-null entry of a boolean mask is false."""
    return bool(pc.any(pc.invert(mask)).as_py())


def _checked(rule: _FieldRule, values: pa.Array) -> pa.Array | None:
    """The column in its warehouse type, or None if a value breaks the rule."""
    kind = rule.field.kind
    if kind == "string":
        if rule.field.pattern and _fails(pc.match_substring_regex(values, rule.field.pattern)):
            return None
        if rule.choices is not None:  # is_in says false for a null, which the model allows
            chosen = pc.is_in(values, value_set=rule.choices)
            if _fails(pc.or_(chosen, pc.is_null(values))):
                return None
        return values
    if kind in ("date", "timestamp"):
        if _fails(pc.match_substring_regex(values, _DATE if kind == "date" else _INSTANT)):
            return None
        target = pa.date32() if kind == "date" else pa.timestamp("us", tz="UTC")
        try:
            out = pc.cast(values, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        days = out if kind == "date" else pc.cast(out, pa.date32())
        low, high = pc.min(days).as_py(), pc.max(days).as_py()
        if low is not None and (low < _EARLIEST or high > _LATEST):
            return None  # near the calendar's ends the two parsers may disagree
        return out
    limit = rule.digits_limit
    if limit is not None and _fails(pc.less(pc.abs(pc.cast(values, rule.wide)), limit)):
        return None  # more whole digits than the precision leaves
    for compare, bound in rule.bounds:
        if _fails(compare(values, bound)):
            return None
    return values


def _validated(
    level: tuple[_FieldRule, ...], struct: pa.StructArray
) -> tuple[dict[str, pa.Array], dict[str, pa.Table]] | None:
    """Columns of one level (arrays become ``_<name>_count``) and child tables, or None."""
    columns: dict[str, pa.Array] = {}
    children: dict[str, pa.Table] = {}
    fields = struct.flatten()
    for rule, values in zip(level, fields, strict=True):
        name = rule.field.name
        if not rule.items:
            checked = _checked(rule, values)
            if checked is None:
                return None
            columns[name] = checked
            continue
        columns[f"_{name}_count"] = pc.cast(pc.list_value_length(values), pa.int32())
        items = pc.list_flatten(values)
        if items.null_count:
            return None  # a null item: the model wants an object
        inner = _validated(rule.items, items)
        if inner is None:
            return None
        rows = pc.list_parent_indices(values)
        offsets = values.offsets
        starts = pc.subtract(offsets.slice(0, len(values)), offsets[0])
        position = pc.subtract(pa.array(range(len(items)), pa.int64()), pc.take(starts, rows))
        children[name] = pa.table(
            {ROW_COLUMN: rows, POSITION_COLUMN: pc.cast(position, pa.int32()), **inner[0]}
        )
    return columns, children


def _extra(mapping: dict[str, Any], known: frozenset[str]) -> str | None:
    return undocumented_fields_json({k: v for k, v in mapping.items() if k not in known})


class ColumnarReader:
    """Reads one endpoint's page bodies into validated columns; see the module docstring."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._selector = endpoint.data_selector
        self._rules = _rules(endpoint.model)
        self._known = frozenset(r.field.name for r in self._rules)
        self._arrays = tuple(
            (r.field.name, frozenset(i.field.name for i in r.items))
            for r in self._rules
            if r.items
        )
        context = pa.struct(
            [("page", pa.int64()), ("per_page", pa.int64()), ("has_more_page", pa.bool_())]
        )
        record = pa.struct([(r.field.name, r.read_type) for r in self._rules])
        schema = pa.schema(
            [
                ("code", pa.int64()),
                ("message", pa.string()),
                (self._selector, pa.list_(record)),
                ("page_context", context),
            ]
        )
        self._strict = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        self._lenient = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        self._envelope_keys = len(schema) + context.num_fields

    def __call__(self, body: bytes) -> ColumnarPage | None:
        """The page as validated columns, or None when the columnar path cannot vouch for it.

        The strict read refuses undocumented keys, so a count of keys proves every
        field present; it stops at the first such key, so where an API adds fields
        to every record it costs little. A body it refuses is read again ignoring
        them, then checked key by key on ``json.loads``'s objects, which also give
        the undocumented fields' ``_extra`` text (the GIL is held for that part).
        """
        table = self._read(body, self._strict)
        strict = table is not None
        if table is None and (table := self._read(body, self._lenient)) is None:
            return None
        if table.num_rows != 1 or table.column("code")[0].as_py() != 0:
            return None
        listed = table.column(self._selector).combine_chunks()
        context = table.column("page_context")[0]
        if listed.null_count or not context.is_valid:
            return None
        records = pc.list_flatten(listed)
        if records.null_count:
            return None
        level = _validated(self._rules, records)
        if level is None:
            return None
        columns, children = level
        if columns["id"].null_count:
            return None  # the pydantic path quarantines it with its reason
        n = len(records)
        if strict:
            if not self._every_key_present(body, n, children):
                return None
            parent_extra = pa.nulls(n, pa.string())
            child_extras = {name: pa.nulls(t.num_rows, pa.string()) for name, t in children.items()}
        else:
            extras = self._extras(body, n, children)
            if extras is None:
                return None
            parent_extra, child_extras = extras
        parent = pa.table({**columns, EXTRA_COLUMN: parent_extra})
        children = {
            name: t.append_column(EXTRA_COLUMN, child_extras[name]) for name, t in children.items()
        }
        has_more = bool(context["has_more_page"].as_py())
        return ColumnarPage(PageColumns(parent, children), has_more)

    @staticmethod
    def _read(body: bytes, options: pj.ParseOptions) -> pa.Table | None:
        try:
            return pj.read_json(
                io.BytesIO(body),
                read_options=pj.ReadOptions(use_threads=False, block_size=len(body) + 1),
                parse_options=options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
            return None

    def _every_key_present(self, body: bytes, records: int, children: dict[str, pa.Table]) -> bool:
        """Every object has every field: absent and null look alike once parsed.

        The strict reader refused unknown and repeated keys, so each object has at
        most its fields, and all have them exactly when the body holds as many keys
        as the objects have fields together. A key ends with ``":``; inside a string
        that text can only follow a backslash (a quote there is escaped), and no field
        name ends with one. (Whitespace before a colon lowers the count, which only
        sends the page to the pydantic path.)
        """
        expected = self._envelope_keys + records * len(self._rules)
        for name, item_known in self._arrays:
            expected += children[name].num_rows * len(item_known)
        return body.count(b'":') - body.count(b'\\":') == expected

    def _extras(
        self, body: bytes, records: int, children: dict[str, pa.Table]
    ) -> tuple[pa.Array, dict[str, pa.Array]] | None:
        """``_extra`` text of each record and item, or None if one lacks a documented field.

        ``json.loads`` sees the objects as the pydantic path does (a repeated
        undocumented key keeps its last value; the reader refused repeated documented
        ones).
        """
        try:
            doc = json.loads(body, parse_float=Decimal)
        except ValueError:
            return None
        listed = doc.get(self._selector) if isinstance(doc, dict) else None
        if not isinstance(listed, list) or len(listed) != records:
            return None
        known, width = self._known, len(self._known)
        parent: list[str | None] = []
        items: dict[str, list[str | None]] = {name: [] for name, _ in self._arrays}
        for record in listed:
            if not isinstance(record, dict) or not record.keys() >= known:
                return None
            parent.append(_extra(record, known) if len(record) > width else None)
            for name, item_known in self._arrays:
                out, item_width = items[name], len(item_known)
                for item in record[name] or ():
                    if not isinstance(item, dict) or not item.keys() >= item_known:
                        return None
                    out.append(_extra(item, item_known) if len(item) > item_width else None)
        for name, texts in items.items():
            if len(texts) != children[name].num_rows:
                return None
        as_text = {name: pa.array(texts, pa.string()) for name, texts in items.items()}
        return pa.array(parent, pa.string()), as_text


@functools.cache
def reader_for(endpoint: Endpoint) -> ColumnarReader | None:
    """The endpoint's columnar reader, or None when its model has a constraint not mirrored."""
    try:
        return ColumnarReader(endpoint)
    except _NotMirrored:
        return None


class SyncPassReader:
    """A columnar reader as one sync pass uses it: it stops trying where it keeps declining.

    An API whose pages the columnar path cannot take would have each parsed only to be
    declined. After ``patience`` declines in a row it tries only one page in
    ``every``; a page it takes resets the count. Declined pages cost nothing but
    time: they go through pydantic as always. (Counters may race across prefetch
    threads; it is a heuristic.)
    """

    def __init__(
        self,
        read: Callable[[bytes], ColumnarPage | None],
        patience: int = 8,
        every: int = 16,
    ) -> None:
        self._read = read
        self._patience = patience
        self._every = every
        self._declined_in_row = 0
        self._skipped = 0

    def __call__(self, body: bytes) -> ColumnarPage | None:
        """The page as validated columns, or None (declined, or not tried)."""
        if self._declined_in_row >= self._patience:
            self._skipped += 1
            if self._skipped % self._every:
                return None
        page = self._read(body)
        self._declined_in_row = 0 if page is not None else self._declined_in_row + 1
        return page


def reader_for_pass(endpoint: Endpoint) -> SyncPassReader | None:
    """A fresh reader for one sync pass of the endpoint (None: its model is not mirrored)."""
    read = reader_for(endpoint)
    return SyncPassReader(read) if read is not None else None


@contextmanager
def arrow_system_allocator() -> Iterator[None]:
    """Arrow allocates from the C library's allocator for the duration (then as before).

    Pages come and go by the thousand; Arrow's default mimalloc pool keeps what they
    freed, the system allocator gives it back (README.md's performance section has
    the figures).
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
