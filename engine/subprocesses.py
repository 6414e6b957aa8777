"""Sub-processes at run time: what a step does to the cases linked to its case, in its own transaction.

A state with `subprocess:` starts a case of another definition when a case enters it (the child), and the
case waits there. Three things follow, each written by the store in the transaction of the step that
causes it (`Cascade`), so that nothing is ever half-written and no worker has to notice anything:

- entering a sub-process state starts the child, linked to the parent's record that entered the state;
- a child's step that closes it resumes the parent: the engine fires `subprocess_closed` on the parent as
  the system, with the child's case, closing record, final state and the values `out` takes, so that the
  parent's resumption is an audited step that `audit verify` decides again like any other;
- a parent that leaves the state waiting on a child (by any other event, a timeout included) or closes
  closes its open children where they stand, with an audited `closed_by_parent` record (and theirs, in
  turn): a child never outlives the wait that started it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sopflow.engine.audit import AuditRecord, iso
from sopflow.engine.casework import start_change, start_record
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import CLOSED_BY_PARENT, RESUME, SYSTEM, Definition, Org
from sopflow.engine.errors import NotFound, SopflowError
from sopflow.engine.lifecycle import trials
from sopflow.engine.step import SYSTEM_ACTOR, Actor, People, Step, start_step, take_step
from sopflow.engine.store import Cascade, CaseChange, CaseRow, NewCase, Reads, Write
from sopflow.engine.timers import on_entry

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine


def cascade(
    engine: Engine,
    compiled: CompiledDefinition,
    case_id: int,
    seq: int,
    left: str | None,
    step: Step,
    person: Actor,
    starter: str,
    org: Org,
    now: datetime,
) -> Cascade | None:
    """What the step `seq` of case `case_id` (from state `left`; None for its start) does to linked cases:
    None when nothing (most steps)."""
    definition = compiled.definition
    moved = step.moved or left is None
    close = None
    left_state = definition.states.get(left or "")
    if left_state is not None and left_state.subprocess is not None and moved and step.event != RESUME:
        close = closer(engine, case_id, seq, now)
    start = None
    if moved and definition.states[step.to_state].subprocess is not None:
        start = _starter(engine, compiled, case_id, seq, step, person, starter, org, now)
    resume = None
    if moved and definition.states[step.to_state].final:
        resume = _resumer(engine, case_id, seq, step.to_state, step.data, now)
    if close is None and start is None and resume is None:
        return None
    return Cascade(close_children=close, start_child=start, resume_parent=resume)


def child_data(inputs: Mapping[str, str], data: Mapping[str, Any]) -> dict[str, Any]:
    """The data a child starts with: each `in` field the parent's data has."""
    return {theirs: data[mine] for theirs, mine in inputs.items() if mine in data}


def _starter(
    engine: Engine,
    compiled: CompiledDefinition,
    parent_id: int,
    parent_seq: int,
    step: Step,
    person: Actor,
    starter: str,
    org: Org,
    now: datetime,
) -> Callable[[Reads], NewCase]:
    sub = compiled.definition.states[step.to_state].subprocess
    assert sub is not None

    def start_child(reads: Reads) -> NewCase:
        # A trial or an adopted version of the child's definition decides its version, keyed by the
        # parent case and its state: a retried step lands on the same version.
        key = f"sub-process:{parent_id}:{step.to_state}"
        version, trial = trials.version_for(engine, sub.definition, key)
        row = reads.definition(sub.definition, version)
        if row is None:
            raise NotFound(
                f"state `{step.to_state}` runs the sub-process `{sub.definition}`, which is not deployed",
                hint="deploy it with this definition: sopflow deploy definitions/",
            )
        child = engine.compiled_from(row)
        # The child's starter is whoever moved the parent into the state; the parent's starter when the
        # system did (a timer, or another child's closing).
        actor = person if person.id != SYSTEM else engine.actor_in(reads, org, starter, now)
        people = People(
            org, lambda role: reads.least_loaded(org.members(role)), reads.open_cases, reads.least_loaded
        )
        try:
            first = start_step(child, actor, child_data(sub.inputs, step.data), people, iso(now))
        except SopflowError as exc:
            raise type(exc)(
                f"the sub-process `{sub.definition}` of state `{step.to_state}` cannot start: {exc.message}",
                hint=exc.hint,
            ) from exc
        return new_case(engine, child, first, actor, org, now, parent=(parent_id, parent_seq), trial=trial)

    return start_child


def new_case(
    engine: Engine,
    compiled: CompiledDefinition,
    step: Step,
    actor: Actor,
    org: Org,
    now: datetime,
    *,
    parent: tuple[int, int],
    trial: Mapping[str, Any] | None = None,
) -> NewCase:
    """A child case as the store starts it: its row, and its first record naming its parent's record (and
    the trial that chose its version, if one did)."""
    definition = compiled.definition
    timers = on_entry(definition, step.entered, now, org.calendar, moved=True)
    change = start_change(definition, step, actor.id)
    detail = {**step.detail, "parent": {"case": parent[0], "seq": parent[1]}}
    if trial is not None:
        detail["trial"] = dict(trial)

    def make_write(case_id: int) -> Write:
        record = start_record(case_id, definition, step, actor.id, now, detail)
        more = cascade(engine, compiled, case_id, 1, None, step, actor, actor.id, org, now)
        return Write(record, change, start_timers=timers.start, cascade=more)

    return NewCase(definition.id, definition.version, actor.id, change, make_write)


def _resumer(
    engine: Engine, child_id: int, child_seq: int, outcome: str, data: Mapping[str, Any], now: datetime
) -> Callable[[CaseRow, Reads], Write | None]:
    def resume_parent(row: CaseRow, reads: Reads) -> Write | None:
        definition_row = reads.definition(row.definition_id, row.definition_version)
        assert definition_row is not None, "a case's definition stays deployed"
        compiled = engine.compiled_from(definition_row)
        state = compiled.definition.states[row.state]
        sub = state.subprocess
        link = reads.parent_link(child_id)
        if not row.open or sub is None or link is None or link[1] != row.entered_seq:
            # The parent no longer waits on this child (it would have closed it on leaving): nothing to do.
            return None
        payload = {
            "case": child_id,
            "seq": child_seq,
            "outcome": outcome,
            "values": {theirs: data[theirs] for theirs in sub.outputs.values() if theirs in data},
        }
        org = engine.org_in(reads)
        people = People(
            org,
            lambda role: reads.least_loaded(org.members(role)),
            reads.open_cases,
            reads.least_loaded,
            lambda state: reads.last_turn(row.definition_id, state),
        )
        snapshot = engine.snapshot_in(compiled, row, reads, now)
        try:
            step = take_step(compiled, snapshot, SYSTEM_ACTOR, RESUME, payload, people)
        except SopflowError as exc:
            raise type(exc)(
                f"case {child_id} closed, but its parent case {row.id} cannot move on: {exc.message}",
                hint=exc.hint,
            ) from exc
        return engine.step_write(compiled, row, org, SYSTEM_ACTOR, step, payload, None, now)

    return resume_parent


def closer(
    engine: Engine, parent_id: int, parent_seq: int, now: datetime
) -> Callable[[CaseRow, Reads], Write | None]:
    """What closes an open child of case `parent_id`, whose record `parent_seq` left the waiting state."""

    def close_child(row: CaseRow, reads: Reads) -> Write | None:
        if not row.open:
            return None
        definition_row = reads.definition(row.definition_id, row.definition_version)
        assert definition_row is not None, "a case's definition stays deployed"
        compiled = engine.compiled_from(definition_row)
        definition = compiled.definition
        record = engine.audit_record(
            row,
            compiled,
            now,
            actor=SYSTEM,
            role=SYSTEM,
            event=CLOSED_BY_PARENT,
            to_state=row.state,
            accepted=True,
            detail={"parent": {"case": parent_id, "seq": parent_seq}},
        )
        return closed_where_it_stands(engine, row, definition, record, now)

    return close_child


def closed_where_it_stands(
    engine: Engine, row: CaseRow, definition: Definition, record: AuditRecord, now: datetime
) -> Write:
    """The write that closes a case in the state it is in (cancelled, or closed by its parent): its row
    closed as it stands, every timer ended, and its own open children closed after it."""
    change = CaseChange(
        state=row.state,
        open=False,
        data=dict(row.data),
        assignee=row.assignee,
        submitter=row.submitter,
        entered=False,
    )
    more = None
    if definition.states[row.state].subprocess is not None:
        more = Cascade(close_children=closer(engine, row.id, record.seq, now))
    return Write(
        record,
        change,
        cancel_timers=tuple(d.name for d in definition.deadlines),
        cancel_state_timers=True,
        cascade=more,
    )
