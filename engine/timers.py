"""Which timers a step starts and cancels: deadlines on spans of the process, and state timeouts; and
when an escalation rung of a breached deadline acts.

Pure: the runtime writes what this returns in the same transaction as the step, so nothing about a
timer lives only in memory. The worker and `audit verify` count rungs with the same `rung_due`.

The choices, stated (docs/language.md): entering a deadline's `from` state again while its span runs
keeps the first clock unless the deadline says `restart: on_reentry`, which cancels the running clock
(and its rungs; a breach so far closes as late) and starts a new one. A rung's `after` counts in the
deadline's calendar (working time for a working-time deadline), from the breach or, with `from: start`,
from the span's start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sopflow.engine.calendar import add_working_time
from sopflow.engine.definition.model import Deadline, Definition, Escalation, WorkingCalendar
from sopflow.engine.store.records import TimerSpec

TIMEOUT_PREFIX = "timeout:"
ITEM_SEPARATOR = "@"
"""Between a deadline's name and its item's branch in a per-item deadline's timer: `visit-in-1d@north`."""


def deadline_of(definition: Definition, timer_name: str) -> Deadline | None:
    """The deadline a deadline or escalation timer belongs to (a per-item one's name has its item)."""
    name = timer_name.split(ITEM_SEPARATOR, 1)[0]
    return next((d for d in definition.deadlines if d.name == name), None)


@dataclass(frozen=True, slots=True)
class TimerChanges:
    start: tuple[TimerSpec, ...]
    cancel: tuple[str, ...]
    leave_state: bool


def due(deadline: Deadline, start: datetime, calendar: WorkingCalendar) -> datetime:
    """When a deadline's span started at `start` is due, in wall or working time."""
    return _later(deadline, start, deadline.within_seconds, calendar)


def rung_due(
    deadline: Deadline,
    rung: Escalation,
    breached_due: datetime,
    span_start: datetime,
    calendar: WorkingCalendar,
) -> datetime:
    """When `rung` of `deadline` acts: `after` in the deadline's calendar, from the moment the deadline
    was due (`breached_due`) or, for a rung `from: start`, from its span's start. Never before the breach:
    a rung counted from the start that would fall earlier acts at the breach."""
    base = span_start if rung.counted_from == "start" else breached_due
    return max(_later(deadline, base, rung.after_seconds, calendar), breached_due)


def _later(deadline: Deadline, moment: datetime, seconds: int, calendar: WorkingCalendar) -> datetime:
    if seconds == 0:
        # "At once" is the moment itself, even when it falls outside working hours.
        return moment
    if deadline.calendar == "working":
        return add_working_time(moment, seconds, calendar)
    return moment + timedelta(seconds=seconds)


def on_entry(
    definition: Definition,
    entered: Sequence[str],
    now: datetime,
    calendar: WorkingCalendar,
    *,
    moved: bool,
) -> TimerChanges:
    """Timers for a step that entered `entered` (in order): spans that end are cancelled, spans that
    begin start (a span already running keeps its clock, unless its deadline restarts on re-entry: then
    it is cancelled and started again), and the last state's timeout starts; leaving a state cancels its
    timeout."""
    cancel: list[str] = []
    start: list[TimerSpec] = []
    for state in entered:
        for d in definition.deadlines:
            if state in d.until:
                cancel.append(d.name)
                start = [t for t in start if t.name != d.name]
            if d.start == state:
                if d.restart == "on_reentry":
                    cancel.append(d.name)
                    start = [t for t in start if t.name != d.name]
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
