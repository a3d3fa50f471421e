"""The API's list order as keys that sort as strings, in Python and in SQL.

A full refresh marks a record deleted only where its place in this order lies inside
the span of a page it read (README, "Incremental sync and full refresh"): the pass
derives the spans from its pages, the merge compares the stored rows with them.
"""

from __future__ import annotations

import datetime as dt

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LOWEST_KEY, HIGHEST_KEY = "", "~"  # below / above every order key (keys are digits)
# SQL twin of ``order_key`` over a resource table's columns.
ORDER_KEY_SQL = "lpad(epoch_us(created_time)::VARCHAR, 20, '0') || lpad(id, 40, '0')"


def order_key(created_time: dt.datetime, record_id: str) -> str:
    """A string that sorts as the API lists records: created_time instant, then numeric id."""
    micros = (created_time - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros:020d}{record_id:0>40}"
