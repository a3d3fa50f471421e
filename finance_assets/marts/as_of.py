"""The as-of date of a run, per organization: the run config's date for all of them, else
today in each organization's own time zone (Auckland's books close on Auckland's day)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import duckdb

AS_OF_TABLE = "as_of_dates"


@dataclass(frozen=True)
class AsOf:
    organization: str
    as_of: dt.date
    base_currency: str


def today_in(time_zone: str, now: dt.datetime) -> dt.date:
    """The calendar date at ``now`` (an aware instant) in an IANA time zone."""
    return now.astimezone(ZoneInfo(time_zone)).date()


def resolve(
    conn: duckdb.DuckDBPyConnection, as_of: dt.date | None, now: dt.datetime
) -> list[AsOf]:
    """One row per organization the warehouse holds (its non-deleted organization record;
    the default one first if an API lists several)."""
    rows = conn.execute(
        """
        SELECT _organization, arg_min(time_zone, (NOT is_default_org, id)),
               arg_min(currency_code, (NOT is_default_org, id))
        FROM finance.organizations WHERE _deleted_at IS NULL
        GROUP BY _organization ORDER BY _organization
        """
    ).fetchall()
    return [AsOf(org, as_of or today_in(tz, now), currency) for org, tz, currency in rows]


def register(conn: duckdb.DuckDBPyConnection, dates: list[AsOf]) -> None:
    """The dates as the temporary table the marts' SQL joins."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {AS_OF_TABLE} "
        "(organization VARCHAR, as_of DATE, base_currency VARCHAR)"
    )
    if dates:
        conn.executemany(
            f"INSERT INTO {AS_OF_TABLE} VALUES (?, ?, ?)",
            [(d.organization, d.as_of, d.base_currency) for d in dates],
        )
