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

from pydantic import BaseModel, Field, ValidationError, create_model

from finance_assets.models import Record
from finance_assets.schema import FieldSpec, field_specs


def _annotation(field: FieldSpec, decimal_digits: bool) -> Any:
    """The field's type with null allowed (items of an array too) and its constraints."""
    if field.item_model is not None:
        value_type: Any = list[_loadable_model(field.item_model, decimal_digits)]  # type: ignore[misc]
    else:
        value_type = field.value_type
    constraints: list[Any] = []
    if field.pattern:
        constraints.append(Field(pattern=field.pattern))
    # Without decimal_digits only non-nullable decimals leave their digit checks out:
    # nullable ones always kept theirs, and the reasons a record gets depend on it.
    if field.kind == "decimal" and (decimal_digits or field.nullable):
        constraints.append(Field(max_digits=field.precision, decimal_places=field.scale))
    if field.bounds:
        constraints.append(Field(**{b.operator: b.value for b in field.bounds}))
    constraints.extend(field.other_constraints)
    value_type = Annotated[(value_type, *constraints)] if constraints else value_type
    return Optional[value_type]  # noqa: UP045 - built at run time


@functools.cache
def _loadable_model(model: type[BaseModel], decimal_digits: bool = True) -> type[BaseModel]:
    """``model`` with every field nullable (nested models too), so that a null is loaded
    and reported rather than rejected; every other constraint kept, the decimal digit
    checks only with ``decimal_digits`` (see ``validate_page``)."""
    fields: dict[str, Any] = {
        f.name: (_annotation(f, decimal_digits), ...) for f in field_specs(model)
    }
    suffix = "" if decimal_digits else "Unbounded"
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
    model: type[BaseModel], records: list[Any], *, decimal_digits: bool = True
) -> tuple[list[BaseModel], list[Rejected]]:
    """Validate one page: loadable records and rejected ones (none silently dropped).

    ``decimal_digits=False`` leaves decimals' digit checks, much of validation's cost,
    to the warehouse's decimal columns, which refuse the same values
    (``ValueDoesNotFit``); the caller then validates the page again with them, for
    the quarantine's reasons.
    """
    schema = _loadable_model(model, decimal_digits)
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
