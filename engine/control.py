"""Case control: acting on a whole case rather than on its current step.

Each act is for an administrator or a member of a role the definition's `control:` names for it (held or
held by delegation), needs a reason, and is one transaction with its audit record, like any step; a
refusal is recorded like a refused step. No event for it needs writing into any state.

- `cancel` closes an open (or suspended) case where it stands: the `cancel_case` record, the case closed
  (its state and data kept), every timer ended, and its open children closed (each with its
  `closed_by_parent` record, and theirs in turn). A child whose parent still waits on it is cancelled
  through its parent, so that no parent waits for ever.
- `suspend` stops a case where it stands ("waiting for the customer"): it takes no step but `resume` and
  `cancel`, and its pending timers pause; the `suspend_case` record keeps what each had left, counted in
  its own calendar (working time stays working time). `resume` starts them again with that time left,
  and its `resume_case` record says how long the case was suspended, for reports to count apart.

`audit verify` decides each act again (`decide_control`, `paused`, `resumed`): who acted, in which role,
under the org and delegations in force then, and what the timers had left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sopflow.engine.audit import AuditRecord, iso
from sopflow.engine.calendar import add_working_time, working_seconds
from sopflow.engine.casework import check_comment
from sopflow.engine.definition.model import (
    CANCEL_CASE,
    CLOSED_BY_PARENT,
    RESUME_CASE,
    SUSPEND_CASE,
    Definition,
    Org,
    WorkingCalendar,
)
from sopflow.engine.errors import Conflict, InvalidData, NotAvailable, NotPermitted, SopflowError
from sopflow.engine.step import Actor, Refused
from sopflow.engine.store import CaseChange, CaseRow, Fired, Reads, TimerSpec, Write
from sopflow.engine.timers import deadline_of

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

Act = Literal["cancel", "suspend"]
"""Which `control:` list allows an act (`resume` is allowed to those who may suspend)."""

_VERBS = {"cancel": "cancel", "suspend": "suspend or resume"}
_KINDS: dict[str, Literal["deadline", "timeout", "escalation"]] = {
    "deadline": "deadline",
    "timeout": "timeout",
    "escalation": "escalation",
}


def decide_control(definition: Definition, org: Org, person: Actor, act: Act) -> tuple[str, str | None]:
    """The role in which `person` may `act` on a case of `definition`, and whom they act for (a delegated
    role); raises `Refused` when they may not. Administrators come first, then the declared roles, own
    roles before delegated ones."""
    control = definition.control
    declared = (control.cancel if act == "cancel" else control.suspend) if control is not None else ()
    admin = [r for r in person.roles if org.roles.get(r) is not None and org.roles[r].administrator]
    allowed = sorted(admin) + [r for r in declared if r not in admin]
    held = [r for r in allowed if r in person.roles]
    held.sort(key=lambda r: r in person.delegated)
    if not held:
        needed = ", ".join(declared) + " or " if declared else ""
        raise Refused(
            NotPermitted(
                f"{person.id} may not {_VERBS[act]} a case of {definition.key}: "
                f"it needs {needed}an administrator",
                hint="ask an administrator"
                + (f" or a member of {', '.join(declared)}" if declared else "")
                + f"; a definition names who else may under `control: {act}:`",
            ),
            None,
            {"needed": [*declared, "administrator"]},
        )
    role = held[0]
    return role, person.delegated.get(role)


def decide_cancel(definition: Definition, org: Org, person: Actor) -> tuple[str, str | None]:
    """`decide_control` for a cancel."""
    return decide_control(definition, org, person, "cancel")


def suspension(history: Sequence[AuditRecord]) -> AuditRecord | None:
    """The record that suspended the case, when it is suspended now (its last accepted record is one)."""
    accepted = [r for r in history if r.outcome == "accepted"]
    return accepted[-1] if accepted and accepted[-1].event == SUSPEND_CASE else None


def closed_error(engine: Engine, row: CaseRow) -> SopflowError:
    """Why a case that is not open takes no event: suspended, cancelled, closed by its parent, or ended."""
    definition = engine.definition(row.definition_id, row.definition_version)
    return closed_case(row, engine.store.history(row.id), definition)


def closed_case(row: CaseRow, history: Sequence[AuditRecord], definition: Definition) -> NotAvailable:
    """`closed_error` from the case's records: its last accepted record says how it stopped (a suspension,
    a cancel, its parent closing it); a case with none of these reached a final state of its own."""
    accepted = [r for r in history if r.outcome == "accepted"]
    last = accepted[-1] if accepted else None
    if last is not None and last.event == SUSPEND_CASE:
        return NotAvailable(
            f"case {row.id} is suspended (by {last.actor} at {last.at}: {last.comment}); "
            "it takes no step until it is resumed",
            hint=f"resume it first: sopflow resume {row.id} (or cancel it)",
        )
    if last is not None and last.event == CANCEL_CASE:
        return NotAvailable(
            f"case {row.id} was cancelled in `{row.state}` (by {last.actor} at {last.at}: {last.comment})",
            hint="a cancelled case takes no more events; start a new case",
        )
    if last is not None and last.event == CLOSED_BY_PARENT:
        parent = last.detail.get("parent", {}).get("case")
        return NotAvailable(
            f"case {row.id} is closed: its parent case {parent} closed it in `{row.state}`",
            hint=f"a closed case takes no more events; `sopflow show {parent}` shows the parent",
        )
    state = definition.states[row.state]
    return NotAvailable(
        f"case {row.id} is closed: it ended in `{row.state}` ({state.title})",
        hint="a closed case takes no more events; start a new case",
    )


def _reason(reason: str | None, act: str) -> str:
    if reason is None or not reason.strip():
        raise InvalidData(
            f"a case is {act} with a reason", hint='say why, e.g. --reason "waiting for the customer"'
        )
    check_comment(reason)
    return reason


def _refusal(
    engine: Engine, row: CaseRow, event: str, actor: str, reason: str | None, refused: Refused, now: datetime
) -> Write:
    compiled = engine.compiled(row.definition_id, row.definition_version)
    return Write(
        engine.audit_record(
            row, compiled, now, actor=actor, event=event, to_state=None, accepted=False, comment=reason,
            detail=refused.detail, reason=f"{refused.error.kind}: {refused.error.message}",
        )
    )  # fmt: skip


def _act(
    engine: Engine,
    case_id: int,
    event: str,
    act: Act,
    actor: str,
    reason: str | None,
    write: Any,
    check: Any = None,
) -> Fired:
    """Run one act on a case in a transaction: `check(row)` refuses what the case's state does not allow
    (nothing written), then who may is decided (a refusal is recorded), then `write(row, role, behalf,
    person, org, now)` gives the accepted write."""
    engine.actor(actor)
    refusal: list[NotPermitted] = []
    now = engine.clock()

    def decide(row: CaseRow, reads: Reads) -> Write:
        refusal.clear()
        if check is not None:
            check(row)
        compiled = engine.compiled(row.definition_id, row.definition_version)
        org = engine.org_in(reads)
        person = engine.actor_in(reads, org, actor, now)
        try:
            role, behalf = decide_control(compiled.definition, org, person, act)
        except Refused as refused:
            assert isinstance(refused.error, NotPermitted)
            refusal.append(refused.error)
            return _refusal(engine, row, event, person.id, reason, refused, now)
        result: Write = write(row, compiled.definition, role, behalf, person.id, org, now)
        return result

    fired = engine.store.fire(case_id, decide, now=now)
    if refusal:
        raise refusal[0]
    return fired


def _unchanged(row: CaseRow, seen: int) -> None:
    if row.audit_seq != seen:
        raise Conflict(
            f"case {row.id} changed while this was decided", hint="look at it again and repeat the command"
        )


# -- cancel ----------------------------------------------------------------------------------------------


def cancel(engine: Engine, case_id: int, *, actor: str, reason: str) -> Fired:
    """Cancel an open or suspended case where it stands (see the module). InvalidData without a reason,
    NotAvailable for a closed case or one whose parent waits on it, NotPermitted (recorded) for someone
    who may not."""
    reason = _reason(reason, "cancelled")
    parent, _children = engine.links(case_id)
    if parent is not None and engine.store.case(parent.parent_case_id).open:
        raise NotAvailable(
            f"case {case_id} is a sub-process of case {parent.parent_case_id}, which waits on it",
            hint=f"cancel case {parent.parent_case_id}: its open sub-processes close with it",
        )
    history = engine.store.history(case_id)
    suspended = suspension(history)

    def check(row: CaseRow) -> None:
        if not row.open and suspended is None:
            raise NotAvailable(
                f"case {row.id} is closed (in `{row.state}`): there is nothing to cancel",
                hint="a closed case takes no more steps",
            )
        if not row.open:
            _unchanged(row, len(history))

    def write(
        row: CaseRow,
        definition: Definition,
        role: str,
        behalf: str | None,
        who: str,
        _org: Org,
        now: datetime,
    ) -> Write:
        return cancel_write(engine, row, definition, who, role, behalf, reason, now)

    return _act(engine, case_id, CANCEL_CASE, "cancel", actor, reason, write, check)


def cancel_write(
    engine: Engine,
    row: CaseRow,
    definition: Definition,
    actor: str,
    role: str,
    behalf: str | None,
    reason: str,
    now: datetime,
) -> Write:
    """The accepted cancel of `row`: its record, the case closed where it stands, its timers ended and,
    when it waits in a sub-process state, its open children closed."""
    from sopflow.engine.subprocesses import closed_where_it_stands

    compiled = engine.compiled(row.definition_id, row.definition_version)
    record = engine.audit_record(
        row, compiled, now, actor=actor, role=role, on_behalf_of=behalf, event=CANCEL_CASE,
        to_state=row.state, accepted=True, comment=reason, detail={"reason": reason},
    )  # fmt: skip
    return closed_where_it_stands(engine, row, definition, record, now)


# -- suspend and resume ------------------------------------------------------------------------------------


def _working(definition: Definition, kind: str, name: str) -> bool:
    """Whether a timer counts working time: a working-time deadline and its escalation rungs do."""
    if kind == "timeout":
        return False
    deadline = deadline_of(definition, name)
    return deadline is not None and deadline.calendar == "working"


def paused(
    definition: Definition,
    pending: Iterable[tuple[str, str, int, datetime, int | None]],
    at: datetime,
    calendar: WorkingCalendar,
) -> list[dict[str, Any]]:
    """What each pending timer (kind, name, rung, due, the record it belongs to) has left at `at`, in its
    own calendar: seconds of working time for a working-time deadline and its rungs, of wall time else.
    A timer already due has nothing left, and fires at once on resuming."""
    out = []
    for kind, name, rung, due, seq in sorted(pending, key=lambda t: (t[0], t[1], t[2])):
        if _working(definition, kind, name):
            left = working_seconds(at, due, calendar)
        else:
            left = max((due - at).total_seconds(), 0.0)
        entry: dict[str, Any] = {"kind": kind, "name": name, "rung": rung, "due_at": iso(due)}
        entry["left"] = left
        if seq is not None:
            entry["seq"] = seq
        out.append(entry)
    return out


def resumed(
    definition: Definition, entries: Sequence[Mapping[str, Any]], at: datetime, calendar: WorkingCalendar
) -> tuple[TimerSpec, ...]:
    """The timers a resumption starts: each paused one, due when its time left has run from `at` in its
    own calendar, still belonging to the record it was started for."""
    specs = []
    for e in entries:
        kind, name, left = str(e["kind"]), str(e["name"]), float(e["left"])
        if _working(definition, kind, name) and left > 0:
            due = add_working_time(at, left, calendar)
        else:
            due = at + timedelta(seconds=left)
        seq = e.get("seq")
        specs.append(
            TimerSpec(_KINDS[kind], name, int(e["rung"]), due, int(seq) if seq is not None else None)
        )
    return tuple(specs)


def suspend(engine: Engine, case_id: int, *, actor: str, reason: str) -> Fired:
    """Suspend an open case where it stands (see the module). InvalidData without a reason, NotAvailable
    for a case that is not open or that a sub-process links (suspend the child, or its parent...),
    NotPermitted (recorded) for someone who may not."""
    reason = _reason(reason, "suspended")
    row = engine.store.case(case_id)
    if not row.open:
        raise closed_error(engine, row)
    definition = engine.definition(row.definition_id, row.definition_version)
    parent, _children = engine.links(case_id)
    if definition.states[row.state].subprocess is not None or (
        parent is not None and engine.store.case(parent.parent_case_id).open
    ):
        raise NotAvailable(
            f"case {case_id} is linked to a running sub-process, and only a case that waits on none and "
            "that no case waits on can be suspended",
            hint="suspend the innermost case that does the waiting work, or cancel the outer one",
        )
    live = engine.store.live_timers(case_id)
    seqs = {(t.kind, t.name, t.rung): t.entered_seq for t in engine.store.pending_timers(case_id)}
    pending = [(k, n, r, due, seqs.get((k, n, r))) for k, n, r, due, is_pending, _ in live if is_pending]

    def check(now_row: CaseRow) -> None:
        if not now_row.open:
            raise closed_error(engine, now_row)
        _unchanged(now_row, row.audit_seq)

    def write(
        now_row: CaseRow,
        definition: Definition,
        role: str,
        behalf: str | None,
        who: str,
        org: Org,
        now: datetime,
    ) -> Write:
        compiled = engine.compiled(now_row.definition_id, now_row.definition_version)
        left = paused(definition, pending, now, org.calendar)
        record = engine.audit_record(
            now_row, compiled, now, actor=who, role=role, on_behalf_of=behalf, event=SUSPEND_CASE,
            to_state=now_row.state, accepted=True, comment=reason, detail={"reason": reason, "paused": left},
        )  # fmt: skip
        return Write(record, _reopen(now_row, False), pause_timers=True)

    return _act(engine, case_id, SUSPEND_CASE, "suspend", actor, reason, write, check)


def resume(engine: Engine, case_id: int, *, actor: str, reason: str | None = None) -> Fired:
    """Resume a suspended case: its paused timers run again with the time they had left. NotAvailable for
    a case that is not suspended, NotPermitted (recorded) for someone who may not suspend it."""
    if reason is not None:
        check_comment(reason)
    history = engine.store.history(case_id)
    since = suspension(history)
    if since is None:
        raise NotAvailable(f"case {case_id} is not suspended", hint="only a suspended case is resumed")

    def check(row: CaseRow) -> None:
        _unchanged(row, len(history))

    def write(
        row: CaseRow, definition: Definition, role: str, behalf: str | None, who: str, org: Org, now: datetime
    ) -> Write:
        compiled = engine.compiled(row.definition_id, row.definition_version)
        entries = since.detail.get("paused", [])
        suspended_for = (now - datetime.fromisoformat(since.at.replace("Z", "+00:00"))).total_seconds()
        detail = {"suspended_seq": since.seq, "suspended_seconds": suspended_for}
        record = engine.audit_record(
            row, compiled, now, actor=who, role=role, on_behalf_of=behalf, event=RESUME_CASE,
            to_state=row.state, accepted=True, comment=reason, detail=detail,
        )  # fmt: skip
        starts = resumed(definition, entries, now, org.calendar)
        return Write(record, _reopen(row, True), start_timers=starts)

    return _act(engine, case_id, RESUME_CASE, "suspend", actor, reason, write, check)


def _reopen(row: CaseRow, is_open: bool) -> CaseChange:
    return CaseChange(
        state=row.state,
        open=is_open,
        data=dict(row.data),
        assignee=row.assignee,
        submitter=row.submitter,
        entered=False,
    )
