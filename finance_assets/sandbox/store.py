"""Records in API order with their JSON pre-rendered, and the mutations on them.

Serving a page must be cheap, so each record's JSON bytes are rendered once
(and again only when it changes) and a page is joined from byte slices.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from finance_assets.sandbox.data import Record

# A Decimal is first encoded as a string between two control characters, which
# json escapes (\u0001, \u0002); generated text never holds them, so replacing the
# escaped markers with their quotes leaves the exact number text.
_OPEN, _CLOSE = "\x01", "\x02"
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"),
    default=lambda o: _OPEN + format(o, "f") + _CLOSE if isinstance(o, Decimal) else _fail(o),
)


def _fail(obj: object) -> None:
    raise TypeError(f"cannot render {type(obj).__name__} as JSON")


def render(obj: Any) -> bytes:
    """JSON bytes with every Decimal written as its exact number text (never via float)."""
    text = _ENCODER.encode(obj)
    return text.replace('"\\u0001', "").replace('\\u0002"', "").encode()


def instant(text: str) -> float:
    """Seconds since the Unix epoch of an RFC 3339 timestamp (offsets compared as instants)."""
    return dt.datetime.fromisoformat(text).timestamp()


def sort_key(record: Record) -> tuple[float, int]:
    """API order: created_time as an instant, then id as a number."""
    return instant(record["created_time"]), int(record["id"])


class Table:
    """One resource: records kept sorted, with parallel lists for fast paging."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.lock = threading.Lock()
        rows = sorted(records, key=sort_key)
        self.records: list[Record] = rows
        self.keys: list[tuple[float, int]] = [sort_key(r) for r in rows]
        self.modified: list[float] = [_modified(r) for r in rows]
        self.blobs: list[bytes] = [render(r) for r in rows]
        self.version = 0
        self._filtered: OrderedDict[tuple[float, int], list[bytes]] = OrderedDict()

    def page(self, page: int, per_page: int, since: float | None) -> tuple[list[bytes], bool]:
        """Blobs of one page and whether more records follow it."""
        with self.lock:
            blobs = self.blobs if since is None else self._since(since)
            start = (page - 1) * per_page
            end = start + per_page
            return blobs[start:end], len(blobs) > end

    def _since(self, since: float) -> list[bytes]:
        """Blobs modified at or after ``since``; cached so a paginated pass scans once."""
        key = (since, self.version)
        hit = self._filtered.get(key)
        if hit is None:
            hit = [b for b, m in zip(self.blobs, self.modified, strict=True) if m >= since]
            self._filtered[key] = hit
            while len(self._filtered) > 16:
                self._filtered.popitem(last=False)
        return hit

    def all_blobs(self) -> list[bytes]:
        with self.lock:
            return list(self.blobs)

    def ids(self) -> list[str]:
        with self.lock:
            return [r["id"] for r in self.records]

    def find(self, record_id: str) -> Record | None:
        with self.lock:
            for record in self.records:
                if record["id"] == record_id:
                    return record
        return None

    def refresh(self, record: Record) -> None:
        """Re-render a record changed in place (its sort key is immutable)."""
        with self.lock:
            i = bisect.bisect_left(self.keys, sort_key(record))
            assert self.records[i] is record
            self.modified[i] = _modified(record)
            self.blobs[i] = render(record)
            self.version += 1

    def insert(self, record: Record) -> None:
        """Insert at its place in the order (normally the end: it is the newest)."""
        key = sort_key(record)
        with self.lock:
            i = bisect.bisect_right(self.keys, key)
            self.keys.insert(i, key)
            self.records.insert(i, record)
            self.modified.insert(i, _modified(record))
            self.blobs.insert(i, render(record))
            self.version += 1

    def delete(self, record_id: str) -> bool:
        """Remove a record; later records shift one place earlier."""
        with self.lock:
            for i, record in enumerate(self.records):
                if record["id"] == record_id:
                    for column in (self.keys, self.records, self.modified, self.blobs):
                        del column[i]
                    self.version += 1
                    return True
        return False


def _modified(record: Record) -> float:
    value = record.get("last_modified_time")
    return instant(value) if isinstance(value, str) else float("-inf")
