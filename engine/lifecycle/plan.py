"""What migrating one case to another version of its definition does, decided without reading or writing
anything: the same function gives the dry run's prediction, the real run's write, and `audit verify`'s
check of a `migrate_case` record.

The rules, stated (docs/operations.md):

- Only an open case moves; a closed case stays on the version it ended on, and a suspended one (its
  timers paused) is resumed first. A case in a parallel state, waiting on a sub-process case or in an
  automatic state does not move, nor one with branches still running on after their join (`remaining:
  finish`): its branches, its child or the system's work began under the old version.
- Its state moves to the state of the same name, or the one `--map` names; that state must exist and wait
  for people (not a choice, automatic, parallel, sub-process or final state).
- Its data gains the `--default` values of fields it does not have, and must then be valid under the new
  version's `data` schema.
- Its assignee stays, unless the new state distributes work to a role the assignee does not hold.
- Its visit keeps its start (votes given in an approval state still count) and its timers are carried
  over where the new version times them the same, recalculated where it times them differently (a
  deadline from its span's start, a state's timeout from entering the state), and cancelled where the
  new version no longer has them; an escalation rung of a deadline that changed is cancelled. A deadline
  the new version adds starts when the case next enters its `from` state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sopflow.engine.audit import iso
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import Deadline, Definition, Org, WorkingCalendar
from sopflow.engine.step import data_change
from sopflow.engine.store.records import TimerSpec
from sopflow.engine.timers import TIMEOUT_PREFIX, due

TimerKey = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Timer:
    """A pending timer as the planner sees it: kind, name, rung, when it is due, the record it belongs
    to, and when its clock started (a deadline's span start)."""

    kind: str
    name: str
    rung: int
    due_at: datetime
    entered_seq: int = 0
    started_at: datetime | None = None

    @property
    def key(self) -> TimerKey:
        return (self.kind, self.name, self.rung)


@dataclass(frozen=True, slots=True)
class CaseView:
    """What the planner needs of a case."""

    id: int
    state: str
    open: bool
    suspended: bool
    data: Mapping[str, Any]
    assignee: str | None
    entered_seq: int
    entered_at: datetime
    timers: tuple[Timer, ...] = ()
    running_on: tuple[str, ...] = ()
    """Branches a join left running (`remaining: finish`) that are not done yet."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One case's migration: whether it moves, and if so to which state, with which data and timers; if
    not, why."""

    case_id: int
    from_state: str
    to_state: str | None
    moves: bool
    reason: str
    data: Mapping[str, Any] = field(default_factory=dict)
    data_change: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    assignee: str | None = None
    kept: tuple[TimerKey, ...] = ()
    cancel: tuple[TimerKey, ...] = ()
    start: tuple[TimerSpec, ...] = ()

    def detail(self, from_version: int, to_version: int) -> dict[str, Any]:
        """The `migrate_case` record's detail: enough for `audit verify` to decide the move again."""
        found: dict[str, Any] = {"from_version": from_version, "to_version": to_version}
        if self.to_state != self.from_state:
            found["state_map"] = {self.from_state: self.to_state}
        if self.defaults:
            found["defaults"] = dict(self.defaults)
        found["timers"] = {
            "kept": [list(k) for k in self.kept],
            "cancelled": [list(k) for k in self.cancel],
            "started": [
                {"kind": t.kind, "name": t.name, "rung": t.rung, "due_at": iso(t.due_at)} for t in self.start
            ],
        }
        return found

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case": self.case_id,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "moves": self.moves,
            "reason": self.reason,
        }
        if self.moves:
            out["data_change"] = dict(self.data_change)
            out["timers"] = self.detail(0, 0)["timers"]
        return out


def plan_case(
    case: CaseView,
    old: Definition,
    new: CompiledDefinition,
    org: Org,
    *,
    state_map: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Plan:
    """Whether and how `case`, on `old`, moves to `new` (see the module)."""
    definition = new.definition
    state_map = state_map or {}
    defaults = defaults or {}
    target = state_map.get(case.state, case.state)

    def refused(reason: str) -> Plan:
        return Plan(case.id, case.state, target, False, reason)

    if case.suspended:
        return refused("it is suspended (its timers paused): resume it first")
    if not case.open:
        return refused(f"it is closed (in `{case.state}`): a closed case stays on the version it ended on")
    here = old.states.get(case.state)
    if here is not None and here.parallel is not None:
        return refused(f"it is in the parallel state `{case.state}`, whose branches started under {old.key}")
    if case.running_on:
        names = ", ".join(f"`{b}`" for b in case.running_on)
        return refused(
            f"its branch(es) {names} run on after their join, started under {old.key}: "
            "migrate it once they are done"
        )
    if here is not None and here.subprocess is not None:
        return refused(f"it waits in `{case.state}` on a sub-process case started under {old.key}")
    if here is not None and here.automatic is not None:
        return refused(f"the system is doing its work in `{case.state}`: migrate it once it has left")
    there = definition.states.get(target)
    if there is None:
        if target == case.state:
            return refused(
                f"{definition.key} has no state `{case.state}`: map it with --map {case.state}=STATE"
            )
        return refused(f"it is mapped to `{target}`, which {definition.key} does not have")
    kind = _not_waiting(there)
    if kind is not None:
        return refused(f"`{target}` of {definition.key} is {kind}: a case moves only to a state that waits")
    applied = {k: v for k, v in sorted(defaults.items()) if k not in case.data}
    data = {**case.data, **applied}
    errors = new.data_errors(data)
    if errors:
        return refused(f"its data is not valid under {definition.key}: {errors[0]}")
    assign = there.assign
    if (
        case.assignee is not None
        and assign is not None
        and assign.kind in ("least_loaded", "claim", "round_robin")
        and case.assignee not in org.members(assign.value)
    ):
        return refused(
            f"its assignee {case.assignee} does not hold `{assign.value}`, to which `{target}` of "
            f"{definition.key} gives its work: reassign it first"
        )
    kept, cancel, start = _timers(case, old, definition, target, org.calendar)
    moved = f"moves from `{case.state}` to `{target}`" if target != case.state else f"stays in `{target}`"
    return Plan(
        case.id,
        case.state,
        target,
        True,
        moved,
        data,
        data_change(case.data, data),
        applied,
        case.assignee,
        kept,
        cancel,
        start,
    )


def _not_waiting(state: Any) -> str | None:
    if state.final:
        return "a final state"
    if state.is_choice:
        return "a choice"
    if state.automatic is not None:
        return "an automatic state"
    if state.parallel is not None:
        return "a parallel state"
    if state.subprocess is not None:
        return "a sub-process state"
    return None


def _timers(
    case: CaseView, old: Definition, new: Definition, target: str, calendar: WorkingCalendar
) -> tuple[tuple[TimerKey, ...], tuple[TimerKey, ...], tuple[TimerSpec, ...]]:
    """Timers kept, cancelled and started (see the module)."""
    kept: list[TimerKey] = []
    cancel: list[TimerKey] = []
    start: list[TimerSpec] = []
    olds = {d.name: d for d in old.deadlines}
    news = {d.name: d for d in new.deadlines}
    timeout = new.states[target].timeout
    timeout_name = TIMEOUT_PREFIX + target
    had_timeout = False
    for t in sorted(case.timers, key=lambda t: t.key):
        if t.kind == "timeout":
            was = old.states.get(case.state)
            same = (
                timeout is not None
                and t.name == timeout_name
                and was is not None
                and was.timeout is not None
                and was.timeout.after_seconds == timeout.after_seconds
            )
            if same:
                kept.append(t.key)
                had_timeout = True
            else:
                cancel.append(t.key)
        elif t.kind == "deadline":
            now_d, was_d = news.get(t.name), olds.get(t.name)
            if now_d is None:
                cancel.append(t.key)
            elif was_d is not None and _same_clock(was_d, now_d):
                kept.append(t.key)
            else:
                cancel.append(t.key)
                begun = t.started_at or case.entered_at
                start.append(
                    TimerSpec("deadline", t.name, 0, due(now_d, begun, calendar), t.entered_seq or None)
                )
        else:
            now_d, was_d = news.get(t.name), olds.get(t.name)
            same_rung = (
                now_d is not None
                and was_d is not None
                and _same_clock(was_d, now_d)
                and t.rung <= min(len(now_d.escalate), len(was_d.escalate))
                and _rung(was_d, t.rung) == _rung(now_d, t.rung)
            )
            (kept if same_rung else cancel).append(t.key)
    if timeout is not None and not had_timeout:
        at = case.entered_at + timedelta(seconds=timeout.after_seconds)
        start.append(TimerSpec("timeout", timeout_name, 0, at, case.entered_seq or None))
    return tuple(kept), tuple(cancel), tuple(start)


def _same_clock(a: Deadline, b: Deadline) -> bool:
    return (a.within_seconds, a.calendar) == (b.within_seconds, b.calendar)


def _rung(deadline: Deadline, number: int) -> tuple[Any, ...]:
    e = deadline.escalate[number - 1]
    return (e.after_seconds, e.action, e.target, e.counted_from)


def timers_of(plan: Plan) -> Sequence[tuple[str, str, int, str]]:
    """The timers a plan starts, as (kind, name, rung, due) for comparison with a record."""
    return [(t.kind, t.name, t.rung, iso(t.due_at)) for t in plan.start]
