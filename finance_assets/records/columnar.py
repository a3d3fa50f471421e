"""The columnar fast path: a page's JSON body straight to validated Arrow columns.

pyarrow's JSON reader parses the body in C++ (without the GIL, so endpoints load in
parallel) against an explicit schema derived from the models; decimals are converted
from the number's own text, never through a float. The page is then validated with
vectorised checks that mirror the loadable pydantic model.

The fast path only takes a page it can vouch for: every record has every field
(an absent field is an error for the model, a null is not), every value of the
kind and within the bounds the model demands. Undocumented fields are kept as
``_extra`` JSON text, exactly as the pydantic path keeps them. For anything else
(and for any model this module does not understand) it answers None, and the
caller decodes and validates record by record with pydantic, which also explains
each problem. Both paths stage identical rows; tests hold them to it.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from finance_assets.endpoints import Endpoint
from finance_assets.models import DecimalType
from finance_assets.records.json_text import undocumented_fields_json
from finance_assets.records.page_columns import PageColumns
from finance_assets.schema import EXTRA_COLUMN, POSITION_COLUMN, ROW_COLUMN, _unwrap, model_columns

_DATE = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
# RFC 3339 with an offset (the model wants aware instants), at most microseconds.
_INSTANT = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_EARLIEST, _LATEST = dt.date(1, 1, 2), dt.date(9999, 12, 30)  # offsets stay in range


class Unsupported(TypeError):
    """A model feature the fast path does not mirror (the endpoint then uses pydantic)."""


@dataclass(frozen=True)
class Rule:
    """How one model field is read and checked."""

    name: str
    read: pa.DataType  # what the JSON reader produces
    kind: str  # string, decimal, date, timestamp, bool, int, list
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    bounds: tuple[tuple[str, Any], ...] = ()  # (compute function, bound), e.g. ("greater", 0)
    precision: int | None = None
    scale: int | None = None
    items: tuple[Rule, ...] | None = None  # for lists: the item model's rules


def _bounds(metadata: list[Any]) -> tuple[tuple[str, Any], ...]:
    out = []
    for m in metadata:
        for cls, attr, fn in ((Gt, "gt", "greater"), (Ge, "ge", "greater_equal"),
                              (Lt, "lt", "less"), (Le, "le", "less_equal")):
            if isinstance(m, cls):
                out.append((fn, getattr(m, attr)))
    return tuple(out)


def _known(metadata: list[Any]) -> None:
    for m in metadata:
        if isinstance(m, (Gt, Ge, Lt, Le, DecimalType, FieldInfo)):
            continue  # a FieldInfo's constraints are listed after it
        extra = set(getattr(m, "__dict__", {})) - {"pattern", "max_digits", "decimal_places"}
        if type(m).__name__ != "_PydanticGeneralMetadata" or extra:
            raise Unsupported(f"constraint {m!r}")


def _rule(name: str, annotation: Any, metadata: list[Any]) -> Rule:
    base, _, inner = _unwrap(annotation)
    metadata = [*metadata, *inner]
    _known(metadata)
    bounds = _bounds(metadata)
    pattern = next((m.pattern for m in metadata if getattr(m, "pattern", None)), None)
    if typing.get_origin(base) is list:
        items = rules(typing.get_args(base)[0])
        struct = pa.struct([(r.name, r.read) for r in items])
        return Rule(name, pa.list_(struct), "list", items=items)
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if not all(isinstance(c, str) for c in choices):
            raise Unsupported(f"{name}: non-text choices")
        return Rule(name, pa.string(), "string", choices=choices)
    if base is Decimal:
        marker = next(m for m in metadata if isinstance(m, DecimalType))
        p, s = marker.precision, marker.scale
        return Rule(name, pa.decimal128(p, s), "decimal", bounds=bounds, precision=p, scale=s)
    if base is bool:
        return Rule(name, pa.bool_(), "bool")
    if base is int:
        return Rule(name, pa.int64(), "int", bounds=bounds)
    if base is str:
        return Rule(name, pa.string(), "string", pattern=pattern)
    if base is dt.date:
        return Rule(name, pa.string(), "date")
    if getattr(base, "__name__", "") == "AwareDatetime":
        return Rule(name, pa.string(), "timestamp")
    raise Unsupported(f"{name}: {annotation!r}")


@functools.cache
def rules(model: type[BaseModel]) -> tuple[Rule, ...]:
    """The model's fields as read-and-check rules; ``Unsupported`` if one has no mirror."""
    out = []
    for name, field in model.model_fields.items():
        out.append(_rule(name, field.annotation, list(field.metadata)))
    return tuple(out)


@dataclass(frozen=True)
class ColumnarPage:
    """A page the fast path vouches for, as the columns the warehouse stages.

    ``extras`` says whether the body had any key beyond the documented ones (which is
    what makes a page cost more to read).
    """

    columns: PageColumns
    has_more: bool
    extras: bool = False

    @property
    def size(self) -> int:
        return self.columns.size


def _fails(mask: pa.Array) -> bool:
    """True if any non-null entry of a boolean mask is false."""
    return bool(pc.any(pc.invert(mask)).as_py())


def _checked(rule: Rule, values: pa.Array) -> pa.Array | None:
    """The column in its warehouse type, or None if a value breaks the rule."""
    kind = rule.kind
    if kind == "string":
        if rule.pattern and _fails(pc.match_substring_regex(values, rule.pattern)):
            return None
        if rule.choices:  # is_in says false for a null, which the loadable model allows
            chosen = pc.is_in(values, value_set=pa.array(rule.choices))
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
    if kind == "decimal":
        assert rule.precision is not None and rule.scale is not None
        wide = pa.decimal128(38, rule.scale)
        limit = pa.scalar(Decimal(10) ** (rule.precision - rule.scale), type=wide)
        if _fails(pc.less(pc.abs(pc.cast(values, wide)), limit)):
            return None  # more whole digits than the precision leaves
    for fn, bound in rule.bounds:
        if _fails(getattr(pc, fn)(values, pa.scalar(bound, type=values.type))):
            return None
    return values


def _validated(
    level: tuple[Rule, ...], struct: pa.StructArray
) -> tuple[dict[str, pa.Array], dict[str, pa.Table]] | None:
    """Columns of one level (lists become ``_<name>_count``) and child tables, or None."""
    columns: dict[str, pa.Array] = {}
    children: dict[str, pa.Table] = {}
    fields = struct.flatten()
    for rule, values in zip(level, fields, strict=True):
        if rule.kind != "list":
            checked = _checked(rule, values)
            if checked is None:
                return None
            columns[rule.name] = checked
            continue
        assert rule.items is not None
        columns[f"_{rule.name}_count"] = pc.cast(pc.list_value_length(values), pa.int32())
        items = pc.list_flatten(values)
        if items.null_count:
            return None  # a null item: the model wants an object
        inner = _validated(rule.items, items)
        if inner is None or inner[1]:
            return None  # (nested lists inside items are not mirrored)
        rows = pc.list_parent_indices(values)
        offsets = values.offsets
        starts = pc.subtract(offsets.slice(0, len(values)), offsets[0])
        position = pc.subtract(pa.array(range(len(items)), pa.int64()), pc.take(starts, rows))
        children[rule.name] = pa.table(
            {ROW_COLUMN: rows, POSITION_COLUMN: pc.cast(position, pa.int32()), **inner[0]}
        )
    return columns, children


def _extra(mapping: dict[str, Any], known: frozenset[str]) -> str | None:
    return undocumented_fields_json({k: v for k, v in mapping.items() if k not in known})


class Decoder:
    """Decodes one endpoint's page bodies; see the module docstring."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.rules = rules(endpoint.model)
        self._columns = [s.name for s in model_columns(endpoint.model)]
        self._known = frozenset(r.name for r in self.rules)
        self._lists = tuple(
            (r.name, frozenset(i.name for i in r.items)) for r in self.rules if r.items is not None
        )
        context = pa.struct(
            [("page", pa.int64()), ("per_page", pa.int64()), ("has_more_page", pa.bool_())]
        )
        record = pa.struct([(r.name, r.read) for r in self.rules])
        schema = pa.schema(
            [
                ("code", pa.int64()),
                ("message", pa.string()),
                (endpoint.data_selector, pa.list_(record)),
                ("page_context", context),
            ]
        )
        self._strict = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        self._lenient = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        self._envelope_keys = len(schema) + context.num_fields

    def __call__(self, body: bytes, lenient: bool = False) -> ColumnarPage | None:
        """The page as validated columns, or None when the fast path cannot vouch for it.

        The strict read refuses undocumented keys, so a count of keys proves every
        field present; it stops at the first such key, so where an API adds fields
        to every record it costs little. A body it refuses (any body, with
        ``lenient``: tests hold both reads to one result) is read again ignoring
        them, then checked key by key on ``json.loads``'s objects, which also give
        the undocumented fields' ``_extra`` text (the GIL is held for that part).
        """
        table = None if lenient else self._read(body, self._strict)
        strict = table is not None
        if table is None and (table := self._read(body, self._lenient)) is None:
            return None
        if table.num_rows != 1 or table.column("code")[0].as_py() != 0:
            return None
        listed = table.column(self.endpoint.data_selector).combine_chunks()
        context = table.column("page_context")[0]
        if listed.null_count or not context.is_valid:
            return None
        records = pc.list_flatten(listed)
        if records.null_count:
            return None
        level = _validated(self.rules, records)
        if level is None:
            return None
        columns, children = level
        if columns["id"].null_count:
            return None  # the slow path quarantines it with its reason
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
        parent = pa.table({**{c: columns[c] for c in self._columns}, EXTRA_COLUMN: parent_extra})
        children = {
            name: t.append_column(EXTRA_COLUMN, child_extras[name]) for name, t in children.items()
        }
        has_more = bool(context["has_more_page"].as_py())
        found = not strict and (
            parent_extra.null_count < n
            or any(a.null_count < len(a) for a in child_extras.values())
        )
        return ColumnarPage(PageColumns(parent, children), has_more, extras=found)

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
        sends the page to the slow path.)
        """
        expected = self._envelope_keys + records * len(self.rules)
        for rule in self.rules:
            if rule.items is not None:
                table = children.get(rule.name)
                expected += (table.num_rows if table is not None else 0) * len(rule.items)
        return body.count(b'":') - body.count(b'\\":') == expected

    def _extras(
        self, body: bytes, records: int, children: dict[str, pa.Table]
    ) -> tuple[pa.Array, dict[str, pa.Array]] | None:
        """``_extra`` text of each record and item, or None if one lacks a documented field.

        ``json.loads`` sees the objects as the slow path does (a repeated undocumented
        key keeps its last value; the reader refused repeated documented ones).
        """
        try:
            doc = json.loads(body, parse_float=Decimal)
        except ValueError:
            return None
        listed = doc.get(self.endpoint.data_selector) if isinstance(doc, dict) else None
        if not isinstance(listed, list) or len(listed) != records:
            return None
        known, width = self._known, len(self._known)
        parent: list[str | None] = []
        items: dict[str, list[str | None]] = {name: [] for name, _ in self._lists}
        for record in listed:
            if not isinstance(record, dict) or not record.keys() >= known:
                return None
            parent.append(_extra(record, known) if len(record) > width else None)
            for name, item_known in self._lists:
                out, item_width = items[name], len(item_known)
                for item in record[name] or ():
                    if not isinstance(item, dict) or not item.keys() >= item_known:
                        return None
                    out.append(_extra(item, item_known) if len(item) > item_width else None)
        for name, texts in items.items():
            if name not in children or len(texts) != children[name].num_rows:
                return None
        as_text = {name: pa.array(texts, pa.string()) for name, texts in items.items()}
        return pa.array(parent, pa.string()), as_text


@functools.cache
def decoder(endpoint: Endpoint) -> Decoder | None:
    """The endpoint's fast decoder, or None when its model has a feature not mirrored."""
    try:
        return Decoder(endpoint)
    except Unsupported:
        return None


class PassDecoder:
    """One pass's use of a decoder, which stops trying where it keeps declining.

    An API whose pages the fast path cannot take would have each parsed only to be
    declined. After ``patience`` declines in a row it tries only one page in
    ``every``; a page it takes resets the count. Declined pages cost nothing but
    time: they go through pydantic as always. (Counters may race across prefetch
    threads; it is a heuristic.)
    """

    def __init__(self, decode: Decoder, patience: int = 8, every: int = 16) -> None:
        self._decode = decode
        self._patience = patience
        self._every = every
        self.declined_in_row = 0
        self.tried = 0
        self.skipped = 0

    def __call__(self, body: bytes) -> ColumnarPage | None:
        if self.declined_in_row >= self._patience:
            self.skipped += 1
            if self.skipped % self._every:
                return None
        self.tried += 1
        page = self._decode(body)
        self.declined_in_row = 0 if page is not None else self.declined_in_row + 1
        return page


def for_pass(endpoint: Endpoint) -> PassDecoder | None:
    """A fresh per-pass decoder for the endpoint (None: its model is not mirrored)."""
    decode = decoder(endpoint)
    return PassDecoder(decode) if decode is not None else None


@contextmanager
def system_allocator() -> Iterator[None]:
    """Arrow allocates from the C library's allocator for the duration (then as before).

    Pages come and go by the thousand; Arrow's default mimalloc pool keeps what they
    freed, the system allocator gives it back. Peak RSS of a scale-5 load: 455 -> 365
    MiB, at the same speed.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
