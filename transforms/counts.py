"""Event counts (SPEC section 5): daily rollups and the periods answers group them by."""

from __future__ import annotations

from datetime import date
from typing import Literal

import polars as pl

GroupBy = Literal["day", "week", "month"]
GROUP_BYS: tuple[str, ...] = ("day", "week", "month")


def period_start(day: pl.Expr, group_by: GroupBy) -> pl.Expr:
    """The first date of a date's period: itself, its ISO week's Monday, its month's 1st."""
    if group_by == "week":
        return day.dt.truncate("1w")
    if group_by == "month":
        return day.dt.month_start()
    return day


def daily_counts(events: pl.LazyFrame) -> pl.LazyFrame:
    """`date`, `event`, `user_id`, `count`: accepted events per UTC date, event name and user."""
    return (
        events.group_by("date", "event", "user_id")
        .agg(count=pl.len().cast(pl.Int64))
        .sort("date", "event", "user_id")
    )


def counts_by_period(
    daily: pl.LazyFrame, *, start: date, end: date, group_by: GroupBy, user_id: str | None = None
) -> pl.LazyFrame:
    """`period`, `event`, `count` over the days in [start, end], sorted by period and event."""
    days = daily.filter(pl.col("date").is_between(start, end))
    if user_id is not None:
        days = days.filter(pl.col("user_id") == user_id)
    return (
        days.group_by(period=period_start(pl.col("date"), group_by), event=pl.col("event"))
        .agg(count=pl.col("count").sum())
        .sort("period", "event")
    )
