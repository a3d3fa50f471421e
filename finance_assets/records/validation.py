"""Turn raw API records into validated models, keeping every record.

A record is validated against a *loadable* variant of its model in which every
field may be null: a null in a non-nullable field is loaded as it came and
reported by the nullability check, never dropped. Anything else the schema
cannot hold (a wrong type, an unparseable date, a non-numeric amount, a missing
``id``) is rejected with its reason, for the quarantine table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ValidationError, create_model

from finance_assets.models import Record


def _decimal_bounds(constraint: object) -> bool:
    return hasattr(constraint, "max_digits") or hasattr(constraint, "decimal_places")


@functools.cache
def loadable(model: type[BaseModel], decimal_bounds: bool = True) -> type[BaseModel]:
    """``model`` with every field nullable (nested models too); constraints kept.

    Without ``decimal_bounds`` the digits/places checks are left out: they are a
    third of validation's cost, and the warehouse's Arrow ``decimal128(p, s)``
    columns refuse exactly those values anyway (the caller then validates the
    page again with them, for the quarantine's reasons).
    """
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if getattr(annotation, "__origin__", None) is list:
            item = loadable(annotation.__args__[0], decimal_bounds)  # type: ignore[union-attr]
            annotation = list[item]
        nullable = Optional[annotation]  # noqa: UP045 - built at run time
        metadata = [m for m in info.metadata if decimal_bounds or not _decimal_bounds(m)]
        if metadata:
            nullable = Annotated[(nullable, *metadata)]
        fields[name] = (nullable, ...)
    suffix = "" if decimal_bounds else "Unbounded"
    return create_model(f"Loadable{suffix}{model.__name__}", __base__=Record, **fields)


@dataclass(frozen=True)
class Rejected:
    """A record the schema cannot hold, with why."""

    record_id: str | None
    raw: Any
    reason: str


def _reason(error: ValidationError) -> str:
    parts = []
    for e in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"{where}: {e['msg']} (got {e.get('input')!r:.60})")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def validate_page(
    model: type[BaseModel], records: list[Any], decimal_bounds: bool = True
) -> tuple[list[BaseModel], list[Rejected]]:
    """Validate one page: loadable records and rejected ones (none silently dropped)."""
    schema = loadable(model, decimal_bounds)
    valid: list[BaseModel] = []
    rejected: list[Rejected] = []
    for raw in records:
        record_id = raw.get("id") if isinstance(raw, dict) else None
        record_id = record_id if isinstance(record_id, str) else None
        try:
            item = schema.model_validate(raw)
        except ValidationError as exc:
            rejected.append(Rejected(record_id, raw, _reason(exc)))
            continue
        if item.id is None:  # type: ignore[attr-defined]
            rejected.append(Rejected(None, raw, "id: null (a record without id cannot be merged)"))
            continue
        valid.append(item)
    return valid, rejected
