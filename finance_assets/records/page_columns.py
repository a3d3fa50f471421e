"""A page of validated records as Arrow columns: the one form the warehouse stages.

Both ways of reading a page end here: the columnar path builds these tables
straight from the body, the pydantic path from its validated models
(``columns_from_records``). The warehouse never sees a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from finance_assets.endpoints import Endpoint
from finance_assets.records.json_text import undocumented_fields_json
from finance_assets.schema import (
    EXTRA_COLUMN,
    POSITION_COLUMN,
    ROW_COLUMN,
    ColumnSpec,
    model_columns,
)


class ValueDoesNotFit(ValueError):
    """A value does not fit its column (e.g. a decimal past its precision or scale)."""


@dataclass(frozen=True)
class PageColumns:
    """One page's records: ``parent`` has the model's columns (``model_columns``) then
    ``_extra``; each child table (one per nested array) has ``_row`` (the parent's row
    on the page), ``position``, the item model's columns, then ``_extra``."""

    parent: pa.Table
    children: Mapping[str, pa.Table]

    @property
    def size(self) -> int:
        """Records on the page."""
        return self.parent.num_rows


def _array(spec: ColumnSpec, values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, type=spec.arrow_type)
    except (pa.ArrowTypeError, pa.ArrowInvalid, TypeError) as exc:
        # Validated values only fail here when a decimal is past its column; never rounded.
        raise ValueDoesNotFit(f"{spec.name} ({spec.sql_type}): {exc}") from exc


def _table(specs: Sequence[ColumnSpec], rows: Sequence[BaseModel], **first: pa.Array) -> pa.Table:
    columns = dict(first)
    for spec in specs:
        if spec.counts:
            arrays = (getattr(r, spec.counts, None) for r in rows)
            values: list[Any] = [None if a is None else len(a) for a in arrays]
        else:
            values = [getattr(r, spec.name, None) for r in rows]
        columns[spec.name] = _array(spec, values)
    extras = [undocumented_fields_json(r.model_extra) for r in rows]
    columns[EXTRA_COLUMN] = pa.array(extras, type=pa.string())
    return pa.table(columns)


def columns_from_records(endpoint: Endpoint, records: Sequence[BaseModel]) -> PageColumns:
    """The validated models of one page as ``PageColumns``; ``ValueDoesNotFit`` when a
    value is past its column (the whole page then fails, nothing half-built)."""
    parent = _table(model_columns(endpoint.model), records)
    children: dict[str, pa.Table] = {}
    for child, item_model in endpoint.children.items():
        rows: list[int] = []
        positions: list[int] = []
        items: list[BaseModel] = []
        for row, record in enumerate(records):
            for position, item in enumerate(getattr(record, child, None) or ()):
                rows.append(row)
                positions.append(position)
                items.append(item)
        children[child] = _table(
            model_columns(item_model),
            items,
            **{
                ROW_COLUMN: pa.array(rows, type=pa.int64()),
                POSITION_COLUMN: pa.array(positions, type=pa.int32()),
            },
        )
    return PageColumns(parent, children)
