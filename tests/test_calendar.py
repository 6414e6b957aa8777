"""Working time (engine/calendar.py): spans, breaks, weekends, holidays and swapped work days, a span
that ends at 24:00, a calendar with no working time at all, time zones, and the working time between two
moments (the inverse of adding it). No database."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopflow.engine.calendar import add_working_time, is_working_day, working_seconds
from sopflow.engine.definition.model import WorkingCalendar
from sopflow.engine.errors import ConfigurationError

SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE = WorkingCalendar(
    timezone="Asia/Shanghai",
    working_hours=((9 * 60, 12 * 60), (13 * 60, 18 * 60)),
    holidays=("2026-10-01", "2026-10-02"),
    extra_working_days=("2026-10-10",),
)
"""Monday to Friday 09:00-12:00 and 13:00-18:00 Beijing time; 1-2 October off; Saturday 10 October worked."""
HOUR = 3600


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SHANGHAI)


def due(start: datetime, seconds: int, calendar: WorkingCalendar = OFFICE) -> datetime:
    end = add_working_time(start, seconds, calendar)
    assert end.tzinfo is UTC
    return end.astimezone(SHANGHAI)


@pytest.mark.parametrize(
    ("start", "seconds", "expected"),
    [
        (local(2026, 3, 2, 10, 0), HOUR, local(2026, 3, 2, 11, 0)),  # Monday, inside a span
        (local(2026, 3, 2, 9, 0), 3 * HOUR, local(2026, 3, 2, 12, 0)),  # fills the morning exactly
        (local(2026, 3, 2, 9, 0), 3 * HOUR + 1, local(2026, 3, 2, 13, 0, 1)),  # one second into the afternoon
        (local(2026, 3, 2, 7, 30), HOUR, local(2026, 3, 2, 10, 0)),  # before opening: counts from 09:00
        (local(2026, 3, 2, 12, 0), HOUR, local(2026, 3, 2, 14, 0)),  # at the break: counts from 13:00
        (local(2026, 3, 2, 12, 30), 30 * 60, local(2026, 3, 2, 13, 30)),  # during the break
        (local(2026, 3, 2, 17, 0), 2 * HOUR, local(2026, 3, 3, 10, 0)),  # over the night
        (local(2026, 3, 2, 19, 0), HOUR, local(2026, 3, 3, 10, 0)),  # after closing
        (local(2026, 3, 6, 17, 0), 4 * HOUR, local(2026, 3, 9, 12, 0)),  # Friday over the weekend
        (local(2026, 3, 7, 10, 0), HOUR, local(2026, 3, 9, 10, 0)),  # from a Saturday
        (local(2026, 3, 2, 9, 0), 8 * HOUR, local(2026, 3, 2, 18, 0)),  # one whole working day
        (local(2026, 3, 2, 9, 0), 8 * HOUR * 5, local(2026, 3, 6, 18, 0)),  # a whole working week
        (local(2026, 9, 30, 17, 0), 2 * HOUR, local(2026, 10, 5, 10, 0)),  # over two holidays and a weekend
        (local(2026, 10, 9, 17, 0), 2 * HOUR, local(2026, 10, 10, 10, 0)),  # into a swapped Saturday
    ],
)
def test_working_time_counts_only_working_hours(start: datetime, seconds: int, expected: datetime) -> None:
    assert due(start, seconds) == expected


def test_the_start_may_be_given_in_any_zone() -> None:
    monday_nine_utc = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
    assert add_working_time(monday_nine_utc, HOUR, OFFICE) == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def test_the_day_is_the_calendars_own_not_greenwichs() -> None:
    # Monday 22:00 in New York is already Tuesday in UTC: Monday evening's work still counts.
    new_york = ZoneInfo("America/New_York")
    evenings = WorkingCalendar(timezone="America/New_York", working_hours=((20 * 60, 23 * 60),))
    monday_ten_pm = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    assert monday_ten_pm.astimezone(new_york).hour == 22
    assert add_working_time(monday_ten_pm, 30 * 60, evenings).astimezone(new_york) == datetime(
        2026, 3, 2, 22, 30, tzinfo=new_york
    )


def test_spans_may_start_and_end_at_any_minute() -> None:
    quarters = WorkingCalendar(timezone="Asia/Shanghai", working_hours=((8 * 60 + 30, 12 * 60 + 15),))
    assert due(local(2026, 3, 2, 7, 0), 60 * 60, quarters) == local(2026, 3, 2, 9, 30)
    assert due(local(2026, 3, 2, 12, 0), 30 * 60, quarters) == local(2026, 3, 3, 8, 45)


def test_working_days_holidays_and_swapped_days() -> None:
    assert is_working_day(date(2026, 3, 2), OFFICE)  # a Monday
    assert not is_working_day(date(2026, 3, 7), OFFICE)  # a Saturday
    assert not is_working_day(date(2026, 10, 1), OFFICE)  # a Thursday off
    assert is_working_day(date(2026, 10, 10), OFFICE)  # a Saturday worked
    both = WorkingCalendar(holidays=("2026-10-10",), extra_working_days=("2026-10-10",))
    assert not is_working_day(date(2026, 10, 10), both)  # a holiday wins


EVENINGS = WorkingCalendar(timezone="Asia/Shanghai", working_hours=((20 * 60, 24 * 60),))
"""Weekday evenings until midnight."""
ALWAYS = WorkingCalendar(
    timezone="Asia/Shanghai", working_days=tuple(range(7)), working_hours=((0, 24 * 60),)
)
"""Every hour of every day."""


@pytest.mark.parametrize(
    ("calendar", "start", "seconds", "expected"),
    [
        (EVENINGS, local(2026, 3, 2, 22, 0), HOUR, local(2026, 3, 2, 23, 0)),
        (EVENINGS, local(2026, 3, 2, 22, 0), 2 * HOUR, local(2026, 3, 3, 0, 0)),  # due at 24:00 itself
        (EVENINGS, local(2026, 3, 2, 22, 0), 2 * HOUR + 1, local(2026, 3, 3, 20, 0, 1)),
        (EVENINGS, local(2026, 3, 2, 22, 0), 3 * HOUR, local(2026, 3, 3, 21, 0)),
        (EVENINGS, local(2026, 3, 6, 23, 0), 2 * HOUR, local(2026, 3, 9, 21, 0)),  # Friday to Monday
        (ALWAYS, local(2026, 3, 2, 12, 0), 24 * HOUR, local(2026, 3, 3, 12, 0)),
        (ALWAYS, local(2026, 3, 2, 12, 0), 7 * 24 * HOUR, local(2026, 3, 9, 12, 0)),  # not a microsecond lost
    ],
)
def test_a_span_that_ends_at_midnight_loses_no_time(
    calendar: WorkingCalendar, start: datetime, seconds: int, expected: datetime
) -> None:
    assert due(start, seconds, calendar) == expected


@pytest.mark.parametrize(
    "calendar",
    [
        WorkingCalendar(working_days=()),
        WorkingCalendar(working_days=(), extra_working_days=("2020-01-04",)),  # a swapped day long past
        WorkingCalendar(working_hours=()),
    ],
    ids=["no working days", "only a past swapped day", "no working hours"],
)
def test_a_calendar_without_working_time_says_so_instead_of_looping(calendar: WorkingCalendar) -> None:
    with pytest.raises(ConfigurationError) as caught:
        add_working_time(datetime(2026, 3, 2, 9, 0, tzinfo=UTC), HOUR, calendar)
    assert (caught.value.message, caught.value.hint, caught.value.exit_code) == (
        "the org calendar has no working time in the next ten years, so a deadline that counts "
        "working time can never end",
        "give the calendar working_days (or extra_working_days ahead) in org.yaml and deploy it",
        2,
    )


def test_working_time_ten_years_away_is_still_found() -> None:
    # A calendar whose only working day is nine years ahead: far, but within the search.
    later = WorkingCalendar(working_days=(), extra_working_days=("2035-03-01",))
    assert add_working_time(datetime(2026, 3, 2, tzinfo=UTC), HOUR, later) == datetime(
        2035, 3, 1, 10, 0, tzinfo=UTC
    )
    assert add_working_time(datetime(2026, 3, 2, tzinfo=UTC), 0, later) == datetime(
        2035, 3, 1, 9, 0, tzinfo=UTC
    )


def test_a_deadline_of_no_working_time_from_outside_the_hours_is_the_next_opening() -> None:
    assert due(local(2026, 3, 2, 19, 0), 0) == local(2026, 3, 3, 9, 0)
    assert due(local(2026, 3, 2, 10, 0), 0) == local(2026, 3, 2, 10, 0)


def test_a_long_stretch_adds_up_to_the_same_as_its_parts() -> None:
    start = local(2026, 3, 2, 10, 15)
    step = due(start, 5 * HOUR)
    assert due(step, 7 * HOUR) == due(start, 12 * HOUR)
    assert due(start, 12 * HOUR) - start > timedelta(hours=12)


# -- working time between two moments (what a paused deadline has left) --------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "seconds"),
    [
        (local(2026, 3, 2, 10, 0), local(2026, 3, 2, 10, 0), 0),  # no time
        (local(2026, 3, 2, 11, 0), local(2026, 3, 2, 10, 0), 0),  # the end before the start
        (local(2026, 3, 2, 10, 0), local(2026, 3, 2, 11, 0), HOUR),
        (local(2026, 3, 2, 11, 0), local(2026, 3, 2, 14, 0), 2 * HOUR),  # the lunch break does not count
        (local(2026, 3, 2, 7, 0), local(2026, 3, 2, 20, 0), 8 * HOUR),  # before opening, after closing
        (local(2026, 3, 6, 17, 0), local(2026, 3, 9, 10, 0), 2 * HOUR),  # over a weekend
        (local(2026, 9, 30, 17, 0), local(2026, 10, 5, 10, 0), 2 * HOUR),  # over two holidays and a weekend
        (local(2026, 10, 9, 17, 0), local(2026, 10, 10, 10, 0), 2 * HOUR),  # into a swapped Saturday
        (local(2026, 3, 2, 9, 0), local(2026, 3, 9, 9, 0), 40 * HOUR),  # a working week
    ],
)
def test_working_time_between_two_moments(start: datetime, end: datetime, seconds: int) -> None:
    assert working_seconds(start, end, OFFICE) == seconds


def test_working_time_between_moments_in_any_zone_and_up_to_midnight() -> None:
    assert (
        working_seconds(
            datetime(2026, 3, 2, 1, 0, tzinfo=UTC), datetime(2026, 3, 2, 2, 30, tzinfo=UTC), OFFICE
        )
        == 5400
    )
    assert working_seconds(local(2026, 3, 2, 22, 0), local(2026, 3, 3, 0, 0), EVENINGS) == 2 * HOUR
    assert working_seconds(local(2026, 3, 2, 23, 0), local(2026, 3, 3, 21, 0), EVENINGS) == 2 * HOUR
    assert working_seconds(local(2026, 3, 2, 12, 0), local(2026, 3, 9, 12, 0), ALWAYS) == 7 * 24 * HOUR


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    minutes=st.integers(min_value=0, max_value=14 * 24 * 60),
    seconds=st.integers(min_value=1, max_value=3 * 40 * HOUR),
)
def test_the_working_time_to_a_due_moment_is_the_time_that_made_it_due(minutes: int, seconds: int) -> None:
    start = local(2026, 9, 21) + timedelta(minutes=minutes)  # two weeks around the October holidays
    assert working_seconds(start, add_working_time(start, seconds, OFFICE), OFFICE) == seconds


@pytest.mark.parametrize(
    ("machine_zone", "calendar", "start", "end", "seconds"),
    [
        # The machine 14 hours ahead: Monday evening in New York is already Tuesday on the machine.
        (
            "Pacific/Kiritimati",
            WorkingCalendar(timezone="America/New_York", working_hours=((20 * 60, 24 * 60),)),
            datetime(2026, 3, 2, 20, 30, tzinfo=ZoneInfo("America/New_York")),
            datetime(2026, 3, 2, 23, 30, tzinfo=ZoneInfo("America/New_York")),
            3 * HOUR,
        ),
        # The machine 11 hours behind: Tuesday morning in Beijing is still Monday on the machine.
        ("Pacific/Pago_Pago", ALWAYS, local(2026, 3, 2, 12, 0), local(2026, 3, 3, 7, 0), 19 * HOUR),
    ],
)
def test_working_time_between_moments_counts_the_calendars_days_not_the_machines(
    monkeypatch: pytest.MonkeyPatch,
    machine_zone: str,
    calendar: WorkingCalendar,
    start: datetime,
    end: datetime,
    seconds: int,
) -> None:
    monkeypatch.setenv("TZ", machine_zone)
    time.tzset()
    try:
        assert working_seconds(start, end, calendar) == seconds
    finally:
        monkeypatch.undo()
        time.tzset()
