"""JSON text for what the warehouse keeps verbatim: undocumented fields and quarantined records.

Numbers stay exact (a ``Decimal`` is written from its own digits, never through a
float) and keys are sorted, so the same record always gives the same text.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

_quote = json.encoder.encode_basestring  # json.dumps(text, ensure_ascii=False), in C


def json_text(value: Any) -> str:
    """Compact JSON with sorted keys and exact decimals (``json.dumps`` would need floats)."""
    if isinstance(value, str):  # the commonest, first
        return _quote(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        # str() of a finite Decimal is a valid JSON number (e.g. 1E+2); no float detour.
        return str(value) if value.is_finite() else json.dumps(str(value))
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_quote(k)}:{json_text(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        return json_text({**value.__dict__, **(value.model_extra or {})})
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return json.dumps(value.isoformat())
    return json.dumps(str(value), ensure_ascii=False)


def undocumented_fields_json(fields: dict[str, Any] | None) -> str | None:
    """The ``_extra`` text of a record's undocumented fields; None when it has none."""
    return json_text(fields) if fields else None
