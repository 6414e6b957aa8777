"""Which timers a step starts and cancels: deadlines on spans of the process, and state timeouts.

Pure: the runtime writes what this returns in the same transaction as the step, so nothing about a
timer lives only in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sopflow.engine.calendar import add_working_time
from sopflow.engine.definition.model import Deadline, Definition, WorkingCalendar
from sopflow.engine.store.records import TimerSpec

TIMEOUT_PREFIX = "timeout:"


@dataclass(frozen=True, slots=True)
class TimerChanges:
    start: tuple[TimerSpec, ...]
    cancel: tuple[str, ...]
    leave_state: bool


def due(deadline: Deadline, start: datetime, calendar: WorkingCalendar) -> datetime:
    """When a deadline's span started at `start` is due, in wall or working time."""
    if deadline.calendar == "working":
        return add_working_time(start, deadline.within_seconds, calendar)
    return start + timedelta(seconds=deadline.within_seconds)


def on_entry(
    definition: Definition,
    entered: Sequence[str],
    now: datetime,
    calendar: WorkingCalendar,
    *,
    moved: bool,
) -> TimerChanges:
    """Timers for a step that entered `entered` (in order): spans that end are cancelled, spans that
    begin start, and the last state's timeout starts; leaving a state cancels its timeout."""
    cancel: list[str] = []
    start: list[TimerSpec] = []
    for state in entered:
        for d in definition.deadlines:
            if state in d.until:
                cancel.append(d.name)
                start = [t for t in start if t.name != d.name]
            if d.start == state:
                start.append(TimerSpec("deadline", d.name, 0, due(d, now, calendar)))
    if entered and definition.states[entered[-1]].final:
        # A closed case keeps no promises: every span ends with it.
        cancel.extend(d.name for d in definition.deadlines)
        start = [t for t in start if t.kind != "deadline"]
    if entered:
        last = definition.states[entered[-1]]
        if last.timeout is not None:
            start.append(
                TimerSpec(
                    "timeout",
                    TIMEOUT_PREFIX + last.name,
                    0,
                    now + timedelta(seconds=last.timeout.after_seconds),
                )
            )
    return TimerChanges(tuple(start), tuple(dict.fromkeys(cancel)), leave_state=moved)
