"""Working time: adding a length of working hours to a moment, by the org's calendar.

A deadline that counts working time ("4 working hours") runs only during the calendar's working hours
on working days, skipping holidays and counting swapped work days (调休).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sopflow.engine.definition.model import WorkingCalendar
from sopflow.engine.errors import ConfigurationError

MAX_DAYS = 3660
"""A calendar with no working time at all must not loop forever."""


def is_working_day(day: date, calendar: WorkingCalendar) -> bool:
    iso = day.isoformat()
    if iso in calendar.holidays:
        return False
    return day.weekday() in calendar.working_days or iso in calendar.extra_working_days


def add_working_time(start: datetime, seconds: float, calendar: WorkingCalendar) -> datetime:
    """The moment at which `seconds` of working time have passed since `start` (an aware datetime)."""
    zone = ZoneInfo(calendar.timezone)
    local = start.astimezone(zone)
    remaining = timedelta(seconds=seconds)
    day = local.date()
    for _ in range(MAX_DAYS):
        if is_working_day(day, calendar):
            for begin, end in calendar.working_hours:
                span_start = _at(day, begin, zone)
                span_end = _at(day, end, zone)
                cursor = max(local, span_start)
                if cursor >= span_end:
                    continue
                available = span_end - cursor
                if remaining <= available:
                    return (cursor + remaining).astimezone(UTC)
                remaining -= available
        day += timedelta(days=1)
    # An org file may pass its checks with no working day at all; the deadline that needs one is the
    # first to find out, and must say so rather than fail as a bug.
    raise ConfigurationError(
        "the org calendar has no working time in the next ten years, so a deadline that counts "
        "working time can never end",
        hint="give the calendar working_days (or extra_working_days ahead) in org.yaml and deploy it",
    )


def _at(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    """The local moment `minutes` after midnight of `day`. A span ending at 24:00 ends at the next day's
    midnight: taking a microsecond off instead would lose it every day, and a deadline due exactly at
    24:00 would move to the next working day."""
    if minutes >= 24 * 60:
        return datetime.combine(day + timedelta(days=1), time(0, 0), zone)
    return datetime.combine(day, time(minutes // 60, minutes % 60), zone)


def working_seconds(start: datetime, end: datetime, calendar: WorkingCalendar) -> float:
    """The working time between `start` and `end` (aware datetimes), in seconds: what a working-time
    deadline has left at `start` when it is due at `end` (0 when `end` is not later)."""
    if end <= start:
        return 0.0
    zone = ZoneInfo(calendar.timezone)
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    total = timedelta()
    day = local_start.date()
    while day <= local_end.date():
        if is_working_day(day, calendar):
            for begin, finish in calendar.working_hours:
                span = (max(local_start, _at(day, begin, zone)), min(local_end, _at(day, finish, zone)))
                if span[1] > span[0]:
                    total += span[1] - span[0]
        day += timedelta(days=1)
    return total.total_seconds()
