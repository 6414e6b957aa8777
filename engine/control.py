"""Case control: acting on a whole case rather than on its current step.

`cancel` closes an open case where it stands, with a reason, for an administrator or a member of a role
the definition's `control: cancel:` names (held or held by delegation). No `cancel` event needs writing
into every state. It is one transaction, like any step: the `cancel_case` record, the case closed (its
state and data kept), every timer of the case ended, and its open children closed (each with its
`closed_by_parent` record, and theirs in turn). A refusal is recorded like a refused step. A child whose
parent still waits on it is cancelled through its parent, so that no parent waits for ever.

`audit verify` decides a cancel again (`decide_cancel`): who cancelled it, in which role, under the org
and delegations in force then.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sopflow.engine.casework import check_comment
from sopflow.engine.definition.model import CANCEL_CASE, Definition, Org
from sopflow.engine.errors import InvalidData, NotAvailable, NotPermitted
from sopflow.engine.step import Actor, Refused
from sopflow.engine.store import Cascade, CaseChange, CaseRow, Fired, Reads, Write

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine


def decide_cancel(definition: Definition, org: Org, person: Actor) -> tuple[str, str | None]:
    """The role in which `person` may cancel a case of `definition`, and whom they act for (a delegated
    role); raises `Refused` when they may not. Administrators come first, then the declared roles, own
    roles before delegated ones."""
    declared = definition.control.cancel if definition.control is not None else ()
    admin = [r for r in person.roles if org.roles.get(r) is not None and org.roles[r].administrator]
    allowed = sorted(admin) + [r for r in declared if r not in admin]
    held = [r for r in allowed if r in person.roles]
    held.sort(key=lambda r: r in person.delegated)
    if not held:
        needed = ", ".join(declared) + " or " if declared else ""
        raise Refused(
            NotPermitted(
                f"{person.id} may not cancel a case of {definition.key}: it needs {needed}an administrator",
                hint="ask an administrator"
                + (f" or a member of {', '.join(declared)}" if declared else "")
                + "; a definition names who else may under `control: cancel:`",
            ),
            None,
            {"needed": [*declared, "administrator"]},
        )
    role = held[0]
    return role, person.delegated.get(role)


def cancel(engine: Engine, case_id: int, *, actor: str, reason: str) -> Fired:
    """Cancel an open case where it stands (see the module). InvalidData without a reason, NotAvailable
    for a closed case or one whose parent waits on it, NotPermitted (recorded) for someone who may not."""
    if not reason or not reason.strip():
        raise InvalidData(
            "a case is cancelled with a reason", hint='say why, e.g. --reason "the customer withdrew"'
        )
    check_comment(reason)
    engine.actor(actor)
    parent, _children = engine.links(case_id)
    if parent is not None and engine.store.case(parent.parent_case_id).open:
        raise NotAvailable(
            f"case {case_id} is a sub-process of case {parent.parent_case_id}, which waits on it",
            hint=f"cancel case {parent.parent_case_id}: its open sub-processes close with it",
        )
    refusal: list[NotPermitted] = []
    now = engine.clock()

    def decide(row: CaseRow, reads: Reads) -> Write:
        refusal.clear()
        if not row.open:
            raise NotAvailable(
                f"case {row.id} is closed (in `{row.state}`): there is nothing to cancel",
                hint="a closed case takes no more steps",
            )
        compiled = engine.compiled(row.definition_id, row.definition_version)
        org = engine.org_in(reads)
        person = engine.actor_in(reads, org, actor, now)
        try:
            role, behalf = decide_cancel(compiled.definition, org, person)
        except Refused as refused:
            assert isinstance(refused.error, NotPermitted)
            refusal.append(refused.error)
            return Write(
                engine.audit_record(
                    row,
                    compiled,
                    now,
                    actor=person.id,
                    event=CANCEL_CASE,
                    to_state=None,
                    accepted=False,
                    comment=reason,
                    detail=refused.detail,
                    reason=f"{refused.error.kind}: {refused.error.message}",
                )
            )
        return cancel_write(engine, row, compiled.definition, person.id, role, behalf, reason, now)

    fired = engine.store.fire(case_id, decide, now=now)
    if refusal:
        raise refusal[0]
    return fired


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
    from sopflow.engine.subprocesses import closer

    compiled = engine.compiled(row.definition_id, row.definition_version)
    detail: dict[str, Any] = {"reason": reason}
    record = engine.audit_record(
        row,
        compiled,
        now,
        actor=actor,
        role=role,
        on_behalf_of=behalf,
        event=CANCEL_CASE,
        to_state=row.state,
        accepted=True,
        comment=reason,
        detail=detail,
    )
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
