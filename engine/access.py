"""Who may see and do what: the permission matrix (the org's `access:`) applied to one person.

A person holds the union of the grants of their roles (roles delegated to them included). Each grant
names actions (view, export, start, modify, administer), a scope (own, department, all,
all_desensitised) and, optionally, the definitions it covers. `scope(engine, person, action)` resolves
them into a `Scope`, which the store applies in SQL (`engine.store.access`): a list or a task list is
filtered by the database, with indexes, never in Python after the fact.

- Reads take `viewer`: None is the operator, who holds the database's credentials and is an
  administrator by definition (docs/operations.md); an org without `access:` restricts nobody.
- A case outside a person's view scope is "not found" to them, with the very message and exit code of
  a case that does not exist, so case numbers cannot be probed.
- A case reached only through an `all_desensitised` grant is shown desensitised (`engine.privacy`, with
  the deployment's privacy key): data fields marked `x-sensitive` as their class allows, people as
  tokens, comments, reasons and a step's facts left out, hashes blanked.
- Writes are checked too: `start` (of the definition), `modify` (a step on the case), `administer`
  (cancel, suspend, resume, reassign). A case the person cannot even view is "not found"; one they view
  but may not change is "not permitted".
- Every refusal, and every export, is recorded in the access log (`engine.access_log`).

`viewer_filter` is the public hook for readers outside the engine's own (reports): the SQLAlchemy
condition on `cases` that admits exactly what a viewer may see.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from sopflow.engine.audit import AuditRecord, iso
from sopflow.engine.definition.model import Definition, Org
from sopflow.engine.errors import NotFound, NotPermitted, SopflowError
from sopflow.engine.privacy import marks_of
from sopflow.engine.step import Actor
from sopflow.engine.store.access import Condition, admitting, append, scope_clause
from sopflow.engine.store.records import CaseRow, Scope, ScopePart

if TYPE_CHECKING:
    from sopflow.engine.branches import BranchStatus
    from sopflow.engine.compile import CompiledDefinition
    from sopflow.engine.privacy import Desensitiser
    from sopflow.engine.runtime import Case, Engine
    from sopflow.engine.store.keys import KeyConflict
    from sopflow.engine.workitems import WorkItem

OPERATOR = "$operator"
"""How the access log names the operator (a read or export with no person named)."""


class OutOfScope(NotFound):
    """A case the person may not view: told exactly as a case that does not exist."""

    def __init__(self, case_id: int, actor: str, action: str) -> None:
        super().__init__(f"case {case_id} does not exist", hint="`sopflow list` shows the cases")
        self.actor, self.action, self.target = actor, action, f"case {case_id}"


class AccessDenied(NotPermitted):
    """An act the permission matrix does not grant the person."""

    def __init__(self, message: str, actor: str, action: str, target: str, *, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.actor, self.action, self.target = actor, action, target


REFUSALS = (OutOfScope, AccessDenied)


def scope(engine: Engine, person: str | None, action: str) -> Scope | None:
    """The cases `person` may `action`; None when nothing restricts them (the operator, no matrix)."""
    if person is None:
        return None
    with (
        engine.store.reading() as reads
    ):  # the org, the person's delegations, the definitions: one connection
        org = engine.org_in(reads)
        if org.access is None:
            return None
        actor = engine.actor_in(reads, org, person, engine.clock())  # NotFound for an unknown person
        keys = reads.definition_keys()
    definitions = [engine.compiled(d, v).definition for d, v in keys]  # compiled once per engine
    return scope_of(org, actor, action, lambda department: _department_steps(definitions, org, department))


def scope_of(
    org: Org, actor: Actor, action: str, steps: Callable[[str], tuple[tuple[str, str], ...]]
) -> Scope:
    """The scope of `actor`'s grants for `action` under `org` (which has a matrix); `steps` gives the steps
    (definition, state) a department owns: a case waiting at one is the department's."""
    parts: list[ScopePart] = []
    for grant in org.access or ():
        if grant.role not in actor.roles or action not in grant.actions:
            continue
        if grant.scope in ("all", "all_desensitised"):
            parts.append(ScopePart(grant.definitions, None, (), grant.scope == "all_desensitised"))
        elif grant.scope == "department" and (departments := _departments(org, actor, grant.role)):
            for department in departments:
                members = tuple(u.id for u in org.users.values() if u.department == department)
                parts.append(ScopePart(grant.definitions, members, steps(department)))
        else:  # own, or a department grant to a person in none: their own cases
            parts.append(ScopePart(grant.definitions, tuple(sorted({actor.id, *actor.stands_in_for}))))
    return Scope(tuple(parts))


def _departments(org: Org, actor: Actor, role: str) -> list[str]:
    """The departments a `department` grant of `role` covers for `actor`: their own when they hold the
    role themselves, and, for a role delegated to them, the department of the person who delegated it
    (a stand-in works the absent person's queue, wherever the stand-in sits)."""
    found: list[str] = []
    own = org.users.get(actor.id)
    if own is not None and role in own.roles and actor.department is not None:
        found.append(actor.department)
    delegator = org.users.get(actor.delegated.get(role, ""))
    if delegator is not None and delegator.department is not None and delegator.department not in found:
        found.append(delegator.department)
    return found


def _department_steps(
    definitions: Sequence[Definition], org: Org, department: str
) -> tuple[tuple[str, str], ...]:
    """The steps (definition, state) of the deployed definitions that a role of `department` owns."""
    return tuple(sorted({step for d in definitions for step in owned_steps(d, org, department)}))


def owned_steps(definition: Definition, org: Org, department: str) -> list[tuple[str, str]]:
    """The states of `definition` whose owner is a role of `department`, as (definition, state)."""
    return [
        (definition.id, s.name)
        for s in definition.states.values()
        if s.owner is not None and s.owner in org.roles and org.roles[s.owner].department == department
    ]


def filtered(
    engine: Engine,
    found: Scope | None,
    viewer: str | None,
    *,
    definition: str | None,
    assignee: str | None,
    data: Mapping[str, Any],
) -> Scope | None:
    """The scope a list filtered so may search: a filter on a person (`assignee`) or on a field some
    deployed definition marks `x-sensitive` compares raw values, so it searches only the cases the viewer
    sees raw; a viewer who sees every case desensitised is refused (recorded), else any guess of a name
    or a phone number could be confirmed by listing with it."""
    if found is None or viewer is None or not any(p.desensitised for p in found.parts):
        return found
    sensitive = ["assignee"] if assignee not in (None, viewer) else []  # `--mine` names no one else
    if data:
        with engine.store.reading() as reads:
            keys = reads.definition_keys()
        marked = {
            name
            for d, v in keys
            if definition is None or d == definition
            for name in marks_of(engine.compiled(d, v).definition.data_schema)
        }
        sensitive += sorted(name for name in data if name in marked)
    if not sensitive:
        return found
    plain = tuple(p for p in found.parts if not p.desensitised)
    if plain:
        return Scope(plain)
    names = ", ".join(f"`{n}`" for n in sensitive)
    raise refused(
        engine,
        AccessDenied(
            f"{viewer} may not filter cases by {names}: they see it only desensitised, and a filter "
            "compares the raw values",
            viewer,
            "view",
            f"a filter on {', '.join(sensitive)}",
            hint="filter on fields that are not `x-sensitive` (the state, the definition, ...), or export "
            "desensitised and join on the tokens",
        ),
    )


def viewer_filter(engine: Engine, viewer: str | None, action: str = "view") -> Condition:
    """The SQLAlchemy condition on the `cases` table that admits exactly the cases `viewer` may `action`
    (`true()` for the operator or an org without a matrix; `false()` for a person granted nothing). For
    reports and other readers that build their own statements: join or filter on `cases` with it."""
    return scope_clause(scope(engine, viewer, action))


# -- one case ------------------------------------------------------------------------------------------


class Compiles(Protocol):
    """What `judge` needs of the engine: a case's compiled definition."""

    def compiled(self, definition_id: str, version: int | None = None) -> CompiledDefinition: ...


def how(found: Scope | None, row: CaseRow) -> str:
    """`raw` or `desensitised`: how a row a list found under `found` is shown."""
    if found is None or not any(p.desensitised for p in found.parts):
        return "raw"  # the common case, decided without looking at the row
    parts = admitting(found, row.definition_id, row.state, row.starter, row.assignee, row.submitter)
    return "desensitised" if parts and all(p.desensitised for p in parts) else "raw"


def judge(engine: Compiles, org: Org, actor: Actor, row: CaseRow, action: str) -> str:
    """`raw` or `desensitised`: how `actor` may `action` the case under `org`; raises OutOfScope when they
    may not even view it, AccessDenied when they may view it but not `action` it (neither is recorded:
    see `refused`). Reads nothing but the case's compiled definition."""
    if org.access is None:
        return "raw"

    def steps(department: str) -> tuple[tuple[str, str], ...]:
        definition = engine.compiled(row.definition_id, row.definition_version).definition
        return tuple(owned_steps(definition, org, department))

    def parts(act: str) -> list[ScopePart]:
        found = scope_of(org, actor, act, steps)
        return admitting(found, row.definition_id, row.state, row.starter, row.assignee, row.submitter)

    granted = parts(action)
    if granted:
        return "desensitised" if all(p.desensitised for p in granted) else "raw"
    if action != "view" and parts("view"):
        raise AccessDenied(
            f"{actor.id} may not {action} case {row.id}: the permission matrix does not grant it to "
            "their roles",
            actor.id,
            action,
            f"case {row.id}",
            hint="ask an administrator, or the owner of the org file, for the grant",
        )
    raise OutOfScope(row.id, actor.id, action)


def case_row(engine: Engine, case_id: int, viewer: str | None, action: str = "view") -> tuple[CaseRow, str]:
    """The case's row and how `viewer` reaches it (`raw` or `desensitised`); OutOfScope, recorded, as
    for no such case; AccessDenied, recorded, for an act they may not take on a case they may view."""
    row = engine.store.case(case_id)
    if viewer is None:
        return row, "raw"
    org = engine.org()
    if org.access is None:
        return row, "raw"
    try:
        return row, judge(engine, org, engine.actor(viewer, org=org), row, action)
    except REFUSALS as exc:
        raise refused(engine, exc) from None


def check_case(engine: Engine, case_id: int, person: str | None, action: str) -> None:
    """Refuse (and record) an act on a case outside the person's grants for it."""
    case_row(engine, case_id, person, action)


def check_start(engine: Engine, org: Org, actor: Actor, definition_id: str) -> None:
    """Refuse (and record) a start the permission matrix does not grant; reads nothing more."""
    if org.access is None:
        return
    found = scope_of(org, actor, "start", lambda _department: ())
    if not any(p.definitions is None or definition_id in p.definitions for p in found.parts):
        raise refused(
            engine,
            AccessDenied(
                f"{actor.id} may not start a `{definition_id}` case: the permission matrix does not grant "
                "it to their roles",
                actor.id,
                "start",
                f"definition {definition_id}",
                hint="ask an administrator, or the owner of the org file, for the grant",
            ),
        )


def key_conflict(engine: Engine, error: KeyConflict) -> SopflowError:
    """The refusal of an idempotency key another request used first, as the person may be told it: who
    used it on which case only when they may view that case; otherwise only that the key is in use, and
    that refusal is recorded in the access log (a guessed key must not probe cases outside one's view)."""
    person = error.claim.actor
    if not error.foreign:
        return error
    org = engine.org()
    if org.access is not None:
        try:
            judge(engine, org, engine.actor(person, org=org), engine.store.case(error.use.case_id), "view")
        except (*REFUSALS, NotFound):
            hidden = error.claim.conflict(error.use, reveal=False)
            hidden.actor, hidden.target = person, f"idempotency key {error.claim.key}"  # type: ignore[attr-defined]
            hidden.action = "start" if error.claim.operation == "start" else "modify"  # type: ignore[attr-defined]
            return refused(engine, hidden)
    return error.claim.conflict(error.use)


def refused(engine: Engine, error: SopflowError) -> SopflowError:
    """Record a refusal of the permission matrix in the access log; returns the error to raise."""
    actor = getattr(error, "actor", OPERATOR)
    append(
        engine.store,
        at=iso(engine.clock()),
        actor=actor,
        action=getattr(error, "action", "view"),
        target=getattr(error, "target", ""),
        outcome="refused",
        records=0,
        detail={"error": error.kind, "message": error.message},
    )
    return error


def exported(engine: Engine, reader: str | None, target: str, records: int, detail: dict[str, Any]) -> None:
    """Record an export in the access log."""
    append(
        engine.store,
        at=iso(engine.clock()),
        actor=reader or OPERATOR,
        action="export",
        target=target,
        outcome="granted",
        records=records,
        detail=detail,
    )


# -- what a desensitised viewer sees -------------------------------------------------------------------


def desensitiser(engine: Engine) -> Desensitiser:
    """The deployment's desensitiser (its privacy key: ConfigurationError when none is given)."""
    from sopflow.engine.privacy import Desensitiser, load_key

    return Desensitiser(load_key(), engine.clock().date())


def shown_case(engine: Engine, case: Case, row: CaseRow, how: str) -> Case:
    if how == "raw":
        return case
    from sopflow.engine.export import Views

    shown, _ = Views(engine, desensitiser(engine)).of(row, [])
    return replace(
        case,
        data=shown["data"],
        starter=shown["starter"],
        assignee=shown["assignee"],
        submitter=shown["submitter"],
    )


def shown_history(
    engine: Engine, row: CaseRow, records: Sequence[AuditRecord], how: str
) -> list[AuditRecord]:
    if how == "raw":
        return list(records)
    from sopflow.engine.export import Views

    _, steps = Views(engine, desensitiser(engine)).of(row, list(records))
    return [
        replace(
            r,
            actor=s["actor"],
            on_behalf_of=s["on_behalf_of"],
            payload=s["payload"],
            data_change=s["data_change"],
            comment=None,
            reason=None,
            detail={},
            prev_hash="",
            hash="",
        )
        for r, s in zip(records, steps, strict=True)
    ]


def shown_work_item(engine: Engine, item: WorkItem, how: str) -> WorkItem:
    if how == "raw":
        return item
    d = desensitiser(engine)
    return replace(item, assignee=d.person(item.assignee), started_by=d.person(item.started_by))


def shown_branches(engine: Engine, found: list[BranchStatus], how: str) -> list[BranchStatus]:
    if how == "raw":
        return found
    d = desensitiser(engine)
    return [replace(b, assignee=d.person(b.assignee)) for b in found]


def shown_text(engine: Engine, prose: str | None, how: str) -> str | None:
    """Prose that may name people (an option's reason, an approval's votes), every member of the org
    named in it as their token."""
    if how == "raw" or not prose:
        return prose
    d = desensitiser(engine)
    users = sorted(engine.org().users, key=len, reverse=True)
    if not users:
        return prose
    # A user id as a whole word: `wang.fang's` names wang.fang, `wang.fangs` does not.
    pattern = re.compile("|".join(rf"(?<![\w.$]){re.escape(u)}(?!\w|\.\w)" for u in users))
    return pattern.sub(lambda m: d.person(m.group(0)) or m.group(0), prose)
