"""The timers a case's records imply, for `audit verify`: which deadlines, escalation rungs and state
timeouts must be pending now, and which deadlines must stand breached.

Replayed with the rules the runtime writes timers by (`engine.timers.on_entry` for a step, the worker's
for a breach), so that a timer deleted or moved to hide a breach, or one added to force a step, is named;
and so that every step the system took answers a timer that was due.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sopflow.engine.audit import AuditRecord, iso
from sopflow.engine.definition.model import Definition, WorkingCalendar
from sopflow.engine.store.records import TimerSpec
from sopflow.engine.timers import TIMEOUT_PREFIX, deadline_of, on_entry, rung_due

TimerKey = tuple[str, str, int]
"""(kind, name, rung) of a timer."""

LiveTimer = tuple[str, str, int, datetime, bool, str | None]
"""A stored timer as `Store.live_timers` reads it: kind, name, rung, due, pending, outcome."""


@dataclass(slots=True)
class TimerReplay:
    pending: dict[TimerKey, datetime] = field(default_factory=dict)
    breached: set[str] = field(default_factory=set)
    started: dict[str, datetime] = field(default_factory=dict)
    """When each deadline's running span started (rungs `from: start` count from it)."""

    def step(
        self,
        definition: Definition,
        entered: tuple[str, ...],
        moved: bool,
        left: str | None,
        at: datetime,
        calendar: WorkingCalendar,
        expand: Callable[[Sequence[TimerSpec]], Sequence[TimerSpec]] = tuple,
    ) -> None:
        """An accepted step that entered `entered` (in order) from state `left` (None: the case's start);
        `expand` makes the timers it starts per item, as the runtime does."""
        changes = on_entry(definition, entered, at, calendar, moved=moved)
        if left is not None:
            if changes.leave_state and definition.states[left].timeout is not None:
                self._drop(lambda key: key[0] == "timeout")
            ended = set(changes.cancel)
            self._drop(lambda key: key[1] in ended)
            self.breached -= ended
        for spec in expand(changes.start):
            key = (spec.kind, spec.name, spec.rung)
            # A span already running (pending or breached) keeps its clock: re-entering its first state
            # does not restart it.
            if spec.kind == "deadline" and (key in self.pending or spec.name in self.breached):
                continue
            if spec.kind == "deadline":
                self.started[spec.name] = at
            self.pending[key] = spec.due_at

    def system(
        self,
        definition: Definition,
        rec: AuditRecord,
        at: datetime,
        calendar: WorkingCalendar | None = None,
    ) -> str | None:
        """Consume the timer a record of the system answers (a breach also starts its escalation rungs,
        counted by `calendar`, the org's in force at the breach); what is wrong, or None."""
        detail = rec.detail
        if rec.event == "deadline_breached":
            name = str(detail.get("deadline"))
            problem = self._take(("deadline", name, 0), at, f"deadline `{name}`")
            if problem is not None:
                return problem
            due = datetime.fromisoformat(str(detail.get("due_at")))
            deadline = deadline_of(definition, name)
            if deadline is None:
                return f"the system noted a breach of `{name}`, which the definition does not have"
            self.breached.add(name)
            started = self.started.get(name)
            recorded = detail.get("span_started_at")
            if recorded is None or calendar is None or started is None:
                # A breach recorded before rungs counted in the deadline's calendar: clock time from it.
                for number, escalation in enumerate(deadline.escalate, 1):
                    self.pending[("escalation", name, number)] = due + timedelta(
                        seconds=escalation.after_seconds
                    )
                return None
            if iso(datetime.fromisoformat(str(recorded))) != iso(started):
                return (
                    f"the breach of `{name}` says its span started {recorded}, "
                    f"its records give {iso(started)}"
                )
            for number, escalation in enumerate(deadline.escalate, 1):
                self.pending[("escalation", name, number)] = rung_due(
                    deadline, escalation, due, started, calendar
                )
            return None
        if detail.get("timer") == "timeout":
            key = ("timeout", TIMEOUT_PREFIX + (rec.from_state or ""), 0)
            return self._take(key, at, f"the timeout of `{rec.from_state}`")
        rung = detail.get("rung")
        if isinstance(rung, int):
            name = str(detail.get("deadline"))
            return self._take(("escalation", name, rung), at, f"rung {rung} of `{name}`")
        return None

    def _take(self, key: TimerKey, at: datetime, what: str) -> str | None:
        due = self.pending.pop(key, None)
        if due is None:
            return f"the system acted on {what}, which its records never started (or which had fired already)"
        if at < due:
            return f"the system acted on {what} at {iso(at)}, before it was due ({iso(due)})"
        return None

    def _drop(self, which: Callable[[TimerKey], bool]) -> None:
        for key in [k for k in self.pending if which(k)]:
            del self.pending[key]

    def differs(self, live: Sequence[LiveTimer]) -> str | None:
        """How the case's stored timers (kind, name, rung, due, pending, outcome) differ from these."""
        stored = {(k, n, r): due for k, n, r, due, pending, _ in live if pending}
        for key, due in sorted(self.pending.items()):
            if key not in stored:
                return (
                    f"its records start {_named(key)} due {iso(due)}, which is not pending (it was removed)"
                )
            if iso(stored[key]) != iso(due):
                return (
                    f"{_named(key)} is due {iso(stored[key])}, its records make it due {iso(due)} "
                    "(it was moved)"
                )
        for key in sorted(stored):
            if key not in self.pending:
                return f"{_named(key)} is pending, but its records never started it (it was added)"
        breached = {
            n
            for k, n, _r, _due, pending, outcome in live
            if k == "deadline" and not pending and outcome == "breached"
        }
        if breached != self.breached:
            return (
                f"the deadlines standing breached are {sorted(breached) or 'none'}, its records give "
                f"{sorted(self.breached) or 'none'}"
            )
        return None


def _named(key: TimerKey) -> str:
    kind, name, rung = key
    if kind == "escalation":
        return f"rung {rung} of deadline `{name}`"
    if kind == "timeout":
        return f"the timeout of `{name.removeprefix(TIMEOUT_PREFIX)}`"
    return f"deadline `{name}`"
