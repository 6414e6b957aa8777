"""Schedules: which periods of a definition's `schedules` are due, and the data a period's case starts with.

A schedule is a cron expression read by `croniter` (five fields, in the org calendar's time zone) and a
working-day rule that moves an occurrence on a day off to the previous or next working day of the org's
calendar (holidays and swapped working days count, `engine.calendar.is_working_day`). A period is named by
its occurrence as the cron expression gives it, before any move: the key stays the same when the calendar
changes after the period started, so a period is never started twice. It is due at the moved moment.

Pure: the store writes each period's row in the same transaction as its case's start (`Store.start_period`),
and the unique (definition, schedule, period) row is what makes a period start exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from sopflow.engine.calendar import is_working_day
from sopflow.engine.definition.model import Schedule, WorkingCalendar, thawed_json

MAX_SHIFT_DAYS = 366
"""How far an occurrence may move to find a working day; a calendar with none is left as it is."""
MAX_PERIODS = 100_000
"""The most periods one look at a schedule returns: a minutely schedule whose workers were down for a
year does not build a million rows in memory; the rest come on the next look."""


@dataclass(frozen=True, slots=True)
class Period:
    """One occurrence of a schedule: `period` names it (UTC), `due` is when its case starts (UTC)."""

    schedule: str
    period: datetime
    due: datetime


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a five-field cron expression croniter accepts, or None."""
    fields = expression.split()
    if len(fields) != 5:
        return (
            f"a cron expression has five fields (minute hour day month weekday), this one has {len(fields)}"
        )
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except (CroniterError, ValueError, KeyError) as exc:
        return str(exc) or exc.__class__.__name__
    return None


def occurrences(
    schedule: Schedule, calendar: WorkingCalendar, after: datetime, until: datetime
) -> Iterator[Period]:
    """The periods of `schedule` whose period moment is after `after` and whose due moment is at or
    before `until`, oldest first (at most MAX_PERIODS)."""
    zone = ZoneInfo(calendar.timezone)
    # A move to the previous working day can make a period due before its occurrence: look ahead by the
    # longest move, so that such a period is found when it is due, not when its occurrence comes.
    horizon = until + timedelta(days=MAX_SHIFT_DAYS if schedule.working_day == "previous" else 0)
    it = croniter(schedule.cron, after.astimezone(zone))
    for _ in range(MAX_PERIODS):
        moment: datetime = it.get_next(datetime)
        if moment > horizon:
            return
        due = shifted(moment, schedule, calendar)
        if due <= until:
            yield Period(schedule.name, moment.astimezone(UTC), due.astimezone(UTC))
        elif schedule.working_day != "previous":
            return


def shifted(moment: datetime, schedule: Schedule, calendar: WorkingCalendar) -> datetime:
    """`moment` (local) moved to a working day as the schedule's `working_day` says, same time of day."""
    if schedule.working_day == "any":
        return moment
    step = timedelta(days=-1 if schedule.working_day == "previous" else 1)
    day: date = moment.date()
    for _ in range(MAX_SHIFT_DAYS):
        if is_working_day(day, calendar):
            return datetime.combine(day, moment.timetz())
        day += step
    return moment


def period_label(period: datetime, calendar: WorkingCalendar, pattern: str | None = None) -> str:
    """How a period is written: its occurrence in the calendar's zone, in ISO 8601 or by the strftime
    `pattern`, where `%Q` is the quarter (1-4) and `%%` a percent sign."""
    local = period.astimezone(ZoneInfo(calendar.timezone))
    if pattern is None:
        return local.isoformat()
    quarter = str((local.month - 1) // 3 + 1)
    # `%%Q` is a percent sign and a Q: split on `%%` first, so that only a real `%Q` names the quarter.
    return "%".join(local.strftime(part.replace("%Q", quarter)) for part in pattern.split("%%"))


def start_data(schedule: Schedule, period: datetime, calendar: WorkingCalendar) -> dict[str, Any]:
    """The data a period's case starts with: the schedule's `data` and the period in its field."""
    data: Mapping[str, Any] = thawed_json(schedule.data)
    return {**data, schedule.period_field: period_label(period, calendar, schedule.period_format)}
