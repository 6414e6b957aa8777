"""One step of a case, decided without I/O: who may act, which transition is taken, what the data becomes,
how choices route and how approval votes count.

The in-memory simulator and the durable runtime both call `take_step` with a `Snapshot` of the case; the
runtime then stores the returned `Step` and its audit record in one transaction. Refusals that must be
audited (not permitted, guard refused) are raised as `Refused`, carrying the error for the caller and
the facts for the audit record; errors that change nothing and need no record (an unknown event, invalid
data) are raised as they are.

Everything a step reads of the case comes in the `Snapshot`, and all of it is derivable from the case's
audit trail (who started it and when, when it entered its state, who fired each event, the votes of this
visit), so that `audit verify` can decide every step again: separation of duties (`not_by`), what a guard
or computed value sees as `case`, and the people that user fields name (checked against the org).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sopflow.engine.compile import APPROVED, REJECTED, ROUTE, CompiledDefinition, GuardContext
from sopflow.engine.definition.model import (
    APPROVE,
    ASSIGNEE,
    DATA_PREFIX,
    FIRED_PREFIX,
    REJECT,
    RESUME,
    STARTER,
    SYSTEM,
    Approval,
    Branch,
    Expression,
    Org,
    State,
    Transition,
    user_fields,
)
from sopflow.engine.errors import (
    GuardRefused,
    InvalidData,
    NotAvailable,
    NotFound,
    NotPermitted,
    SopflowError,
)

CLAIM = "claim"
"""The built-in event with which a member of a role takes a case of a state with `assign: {claim: role}`."""
START_WORK = "start_work"
"""The built-in event with which the assignee of a state with `assign` says they have started its work:
the work item goes from allocated to started (who is working on it, and since when)."""

_DATA_FIELD = re.compile(r"\bdata\.([A-Za-z_][A-Za-z0-9_]*)")

Decision = Literal["approve", "reject"]


@dataclass(frozen=True, slots=True)
class Actor:
    """A person acting on a case: their roles, and for roles held by delegation, whom they act for."""

    id: str
    roles: frozenset[str]
    department: str | None = None
    delegated: Mapping[str, str] = field(default_factory=dict)
    """Role → the user who delegated it to this actor."""
    stands_in_for: frozenset[str] = frozenset()
    """Everyone whose running delegation reaches this actor (roles they hold themselves included): the
    actor stands in for them on the cases assigned to them."""

    def guard_view(self) -> dict[str, Any]:
        return {"id": self.id, "roles": sorted(self.roles), "department": self.department or ""}


@dataclass(frozen=True, slots=True)
class Vote:
    voter: str
    role: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a step needs to know of a case."""

    state: str
    data: Mapping[str, Any]
    starter: str
    assignee: str | None = None
    submitter: str | None = None
    """Who moved the case into its current state."""
    votes: tuple[Vote, ...] = ()
    """The votes cast since the case entered its current (approval) state."""
    fired: tuple[tuple[str, str], ...] = ()
    """(event, person) of every accepted step of the case, in order (the person a delegate acted for);
    filled only when the definition reads it (`CompiledDefinition.reads_history`)."""
    started_at: str | None = None
    entered_at: str | None = None
    """When the case started and entered its current state (ISO 8601, as its audit records say)."""
    now: str | None = None
    """The step's own time (ISO 8601): `case.seconds_in_state` counts up to it."""
    branches: Mapping[str, Any] = field(default_factory=dict)
    """In a parallel state: where each branch stands (branch → {state, assignee}), as the last record of
    the visit says (`engine.branches`)."""
    lingering: Mapping[str, Any] = field(default_factory=dict)
    """Branches that run on after their join (`remaining: finish`): {state: the parallel state, branches:
    where each stood at the join and since}, as the last record that carries them says; {} when none."""


def case_view(snapshot: Snapshot) -> dict[str, Any]:
    """What a guard or a computed value sees as `case`: every value derived from the case's audit trail
    (its first record, the record that entered the current state, the accepted steps) and the step's time."""
    fired: dict[str, list[str]] = {}
    for event, person in snapshot.fired:
        people = fired.setdefault(event, [])
        if person not in people:
            people.append(person)
    seconds = 0
    if snapshot.entered_at and snapshot.now:
        delta = datetime.fromisoformat(snapshot.now) - datetime.fromisoformat(snapshot.entered_at)
        seconds = max(int(delta.total_seconds()), 0)
    return {
        "started_by": snapshot.starter,
        "started_at": snapshot.started_at or snapshot.now or "",
        "fired_by": fired,
        "assignee": snapshot.assignee or "",
        "entered_at": snapshot.entered_at or snapshot.now or "",
        "seconds_in_state": seconds,
    }


def excluded_people(not_by: Iterable[str], snapshot: Snapshot, data: Mapping[str, Any]) -> dict[str, str]:
    """Who a `not_by` keeps from acting on the case, each with why (for the refusal's message)."""
    out: dict[str, str] = {}
    for entry in not_by:
        if entry == STARTER:
            out.setdefault(snapshot.starter, "started the case")
        elif entry == ASSIGNEE and snapshot.assignee is not None:
            out.setdefault(snapshot.assignee, "is the case's assignee")
        elif entry.startswith(FIRED_PREFIX):
            event = entry[len(FIRED_PREFIX) :]
            for fired, person in snapshot.fired:
                if fired == event:
                    out.setdefault(person, f"fired `{event}` on the case")
        elif entry.startswith(DATA_PREFIX):
            name = entry[len(DATA_PREFIX) :]
            value = data.get(name)
            if isinstance(value, str):
                out.setdefault(value, f"is named in the data field `{name}`")
    return out


def _separation(
    actor: Actor, role: str | None, not_by: Sequence[str], snapshot: Snapshot, what: str
) -> Refused | None:
    """The refusal when `not_by` excludes the actor (or the person they act for), else None."""
    if not not_by or actor.id == SYSTEM:
        return None
    excluded = excluded_people(not_by, snapshot, snapshot.data)
    principal = actor.delegated.get(role, actor.id) if role else actor.id
    for person in dict.fromkeys((actor.id, principal)):
        if person in excluded:
            who = actor.id if person == actor.id else f"{actor.id} acts for {person}, who"
            return Refused(
                NotPermitted(
                    f"{who} {excluded[person]} and may not {what} (separation of duties)",
                    hint=f"someone else must; excluded here: {', '.join(not_by)}",
                ),
                role,
                {"rule": "separation-of-duties", "excluded": list(not_by)},
            )
    return None


@dataclass(frozen=True, slots=True)
class Step:
    """An accepted step: everything the store writes and the audit record says."""

    event: str
    from_state: str
    to_state: str
    role: str | None
    on_behalf_of: str | None
    data: dict[str, Any]
    data_change: dict[str, list[Any]]
    entered: tuple[str, ...]
    """Every state the case entered, in order (a choice state and the state it routed to)."""
    assignee: str | None
    detail: dict[str, Any]

    @property
    def moved(self) -> bool:
        return bool(self.entered)


class Refused(Exception):
    """An attempt the rules refuse; the caller records it in the audit trail, then raises `error`."""

    def __init__(self, error: SopflowError, role: str | None, detail: Mapping[str, Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.role = role
        self.detail = dict(detail)


@dataclass(frozen=True, slots=True)
class People:
    """What a step needs of the organisation: its members, and how to pick the least loaded one."""

    org: Org
    least_loaded: Callable[[str], str | None]
    open_cases: Callable[[str], int] | None = None
    """How many open cases a person holds, for a role's `wip_limit` (None: not enforced, a dry run)."""
    least_loaded_of: Callable[[Sequence[str]], str | None] | None = None
    """The least loaded of some people (an assignment's `not_by` passes others by); None: the first."""
    last_turn: Callable[[str], str | None] | None = None
    """The member a round-robin state (by name) last gave a case to; None: nobody is known."""
    lists_checked: bool = True
    """Whether each item of a list of people (`items: {format: user}`) must be a person of the org; False
    when `audit verify` decides records again, as those written before lists were checked took any item."""

    def members(self, role: str) -> tuple[str, ...]:
        return self.org.members(role)


def standing_in(actor: Actor, snapshot: Snapshot) -> Actor:
    """`actor`, standing in for the case's assignee when the assignee delegated any role to them (an
    absence): then they act as `$assignee` on the assignee's behalf, and the record says so."""
    assignee = snapshot.assignee
    if assignee is None or assignee == actor.id or assignee not in actor.stands_in_for:
        return actor
    return replace(actor, delegated={**actor.delegated, ASSIGNEE: assignee})


def acting_role(actor: Actor, by: Sequence[str], snapshot: Snapshot) -> str | None:
    """The role in which `actor` may fire a transition allowed to `by`, or None. The actor's own roles
    come before delegated ones, then $assignee, then $starter. The system (timers) may fire anything."""
    if actor.id == SYSTEM:
        return SYSTEM
    own = [r for r in by if r in actor.roles and r not in actor.delegated]
    if own:
        return own[0]
    delegated = [r for r in by if r in actor.delegated]
    if delegated:
        return delegated[0]
    if ASSIGNEE in by and snapshot.assignee == actor.id:
        return ASSIGNEE
    if STARTER in by and snapshot.starter == actor.id:
        return STARTER
    return None


def take_step(
    compiled: CompiledDefinition,
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    payload: Mapping[str, Any],
    people: People,
    *,
    stay: bool = True,
) -> Step:
    """Decide one event on a case. Raises `Refused` (to be audited), `NotAvailable` or `InvalidData`.
    `stay=False` decides a transition back to its own state as a re-entry, as every such transition was
    before staying became the rule (`audit verify` replays records written then with it)."""
    definition = compiled.definition
    state = definition.states[snapshot.state]
    actor = standing_in(actor, snapshot)
    if state.final:
        raise NotAvailable(
            f"the case is closed: it ended in `{state.name}` ({state.title})",
            hint="a closed case takes no more events; start a new case",
        )
    if state.parallel is not None and not compiled.alternatives(state.name, event):
        # Imported here: the branches' rules are built on this module's.
        from sopflow.engine.branches import branch_step

        return branch_step(compiled, state, snapshot, actor, event, payload, people)
    if snapshot.lingering and not compiled.alternatives(state.name, event):
        from sopflow.engine.branches import lingering_step

        found = lingering_step(compiled, snapshot, actor, event, payload, people)
        if found is not None:
            return found
    if event == RESUME:
        return _resume(compiled, state, snapshot, actor, payload, people)
    if state.approval is not None and event in (APPROVE, REJECT):
        return _vote(compiled, state, state.approval, snapshot, actor, event, payload, people)
    if event == CLAIM and state.assign is not None and state.assign.kind == "claim":
        return _claim(state, state.assign.value, snapshot, actor, people)
    if event == START_WORK and state.assign is not None and START_WORK not in state.events:
        return _start_work(state, snapshot, actor)
    alternatives = compiled.alternatives(state.name, event)
    if not alternatives:
        raise NotAvailable(
            f"`{event}` is not an event of state `{state.name}` ({state.title})",
            hint=f"events here: {', '.join(state.events) or 'none'}",
        )
    return _transition(compiled, state, alternatives, snapshot, actor, event, payload, people, stay)


def _transition(
    compiled: CompiledDefinition,
    state: State,
    alternatives: Sequence[Transition],
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    payload: Mapping[str, Any],
    people: People,
    stay: bool = True,
) -> Step:
    roles = {t.path: acting_role(actor, t.by, snapshot) for t in alternatives}
    permitted = [t for t in alternatives if roles[t.path] is not None]
    if not permitted:
        needed = sorted({r for t in alternatives for r in t.by})
        raise Refused(
            NotPermitted(
                f"{actor.id} may not fire `{event}` in state `{state.name}`: it needs {_roles_text(needed)}",
                hint=f"{actor.id} holds {_roles_text(sorted(actor.roles)) if actor.roles else 'no role'}",
            ),
            None,
            {"needed": needed},
        )
    separations = {
        t.path: _separation(actor, roles[t.path], t.not_by, snapshot, f"fire `{event}`") for t in permitted
    }
    cleared = [t for t in permitted if separations[t.path] is None]
    if not cleared:
        refusal = separations[permitted[0].path]
        assert refusal is not None
        raise refusal
    permitted = cleared
    first = permitted[0]
    errors = compiled.payload_errors(first, payload)
    if errors:
        raise InvalidData(
            f"the payload of `{event}` is not valid: {errors[0]}",
            hint=_payload_hint(event, first.payload),
            errors=errors,
        )
    check_people(user_fields(first.payload), payload, people.org, "payload field")
    view = case_view(snapshot) if compiled.reads_case else None
    context = GuardContext(
        data=snapshot.data,
        payload=payload,
        actor=actor.guard_view(),
        permitted=frozenset(t.path for t in permitted),
        case=view,
    )
    fired = compiled.fire(state.name, event, context)
    if fired is None or not isinstance(fired.taken, Transition):
        guarded = next((t for t in permitted if t.when is not None), first)
        explain = str(guarded.explain) if guarded.explain else None
        text = guarded.when.text if guarded.when else ""
        raise Refused(
            GuardRefused(
                f"`{event}` is refused in state `{state.name}`: "
                + (explain or f"the condition `{text}` does not hold"),
                hint=f"the condition is `{text}`" if explain else "change the case's data or the payload",
            ),
            roles[first.path],
            {"guard": text, "values": _values(text, snapshot.data)},
        )
    taken = fired.taken
    detail: dict[str, Any] = {"payload": dict(payload)} if payload else {}
    data = _changed_data(compiled, snapshot.data, taken.set, taken.copy, taken.compute, context, detail)
    role = roles[taken.path]
    if taken.stays and stay:
        return _stay(compiled, snapshot, actor, event, data, role, people, detail)
    return _enter(compiled, snapshot, actor, event, fired.state, data, role, people, detail)


def _stay(
    compiled: CompiledDefinition,
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    data: dict[str, Any],
    role: str | None,
    people: People,
    detail: dict[str, Any],
) -> Step:
    """A step that records what it does and stays: the state is not left and entered again, so its
    assignee (or claim), its timeout and its approval round go on as they were. `stayed` in the record
    says so, for `audit verify` to tell it from a re-entry recorded before staying was the rule."""
    if data != snapshot.data:
        _check_data(compiled, snapshot, data, people)
    detail["stayed"] = True
    return staying(event, snapshot, actor, role, data, detail)


def staying(
    event: str,
    snapshot: Snapshot,
    actor: Actor,
    role: str | None,
    data: dict[str, Any],
    detail: dict[str, Any],
) -> Step:
    """A step that leaves the case in its state, entering nothing: its assignee stays."""
    return Step(
        event=event,
        from_state=snapshot.state,
        to_state=snapshot.state,
        role=role,
        on_behalf_of=actor.delegated.get(role) if role else None,
        data=data,
        data_change=data_change(snapshot.data, data),
        entered=(),
        assignee=snapshot.assignee,
        detail=detail,
    )


def _resume(
    compiled: CompiledDefinition,
    state: State,
    snapshot: Snapshot,
    actor: Actor,
    payload: Mapping[str, Any],
    people: People,
) -> Step:
    """The engine moves a case waiting in a sub-process state on, by its child's outcome: the payload
    names the child case, its closing record, the final state it closed in and the values `out` takes."""
    sub = state.subprocess
    if sub is None:
        raise NotAvailable(
            f"`{RESUME}` is not an event of state `{state.name}` ({state.title})",
            hint=f"events here: {', '.join(state.events) or 'none'}",
        )
    if actor.id != SYSTEM:
        raise Refused(
            NotPermitted(
                f"{actor.id} may not fire `{RESUME}`: "
                "the engine resumes the case when its sub-process closes",
                hint=f"act on the child case (a case of {sub.definition}); `sopflow show` names it",
            ),
            None,
            {"needed": [SYSTEM]},
        )
    outcome = payload.get("outcome")
    target = sub.on.get(outcome) if isinstance(outcome, str) else None
    if target is None:
        raise InvalidData(
            f"the sub-process of `{state.name}` closed in {outcome!r}, which its `on` does not map",
            hint=f"map every final state of {sub.definition} under `subprocess: on:`",
        )
    values = payload.get("values")
    values = values if isinstance(values, Mapping) else {}
    data = dict(snapshot.data)
    for mine, theirs in sub.outputs.items():
        if theirs in values:
            data[mine] = _plain(values[theirs])
    return _enter(compiled, snapshot, actor, RESUME, target, data, SYSTEM, people, {})


def _changed_data(
    compiled: CompiledDefinition,
    before: Mapping[str, Any],
    fixed: Mapping[str, Any],
    copy: Mapping[str, str],
    compute: Mapping[str, Expression],
    context: GuardContext,
    detail: dict[str, Any],
) -> dict[str, Any]:
    """The data after a step's `set`, then `copy`, then `compute` (each computed value is recorded in
    `detail`, so that the audit record says what was computed and `audit verify` can compare)."""
    data = dict(before)
    for key, value in fixed.items():
        data[key] = _plain(value)
    for key, source in copy.items():
        if source in context.payload:
            data[key] = context.payload[source]
    if compute:
        computed = {key: _plain(compiled.value(expr, context)) for key, expr in compute.items()}
        data.update(computed)
        detail["computed"] = computed
    return data


def check_people(
    fields: Mapping[str, str | None],
    values: Mapping[str, Any],
    org: Org,
    what: str,
    names: Iterable[str] = (),
    lists: Mapping[str, str | None] | None = None,
) -> None:
    """Refuse (InvalidData) a value of a `format: user` field that is not a person of the org, or not one
    holding the field's `role`; so too each item of a list of people (`lists`); only `names` are checked
    when given (the fields a step changed)."""
    wanted = set(names)
    for name, role in fields.items():
        if name in values and (not wanted or name in wanted):
            _check_person(org, f"{what} `{name}`", values[name], role)
    for name, role in (lists or {}).items():
        items = values.get(name)
        if isinstance(items, list | tuple) and (not wanted or name in wanted):
            for i, item in enumerate(items):
                _check_person(org, f"{what} `{name}` (item {i + 1})", item, role)


def _check_person(org: Org, where: str, value: Any, role: str | None) -> None:
    user = org.users.get(value) if isinstance(value, str) else None
    if user is None:
        raise InvalidData(
            f"{where} names {value!r}, who is not a person of the org `{org.id}`",
            hint=f"give a user id of a member of {role}: {', '.join(org.members(role)[:10])}"
            if role
            else "give a user id from the org",
        )
    if role is not None and role not in user.roles:
        raise InvalidData(
            f"{where} names {value}, who does not hold the role {role}",
            hint=f"give a member of {role}: {', '.join(org.members(role)[:10]) or 'the role has none'}",
        )


def _enter(
    compiled: CompiledDefinition,
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    target: str,
    data: dict[str, Any],
    role: str | None,
    people: People,
    detail: dict[str, Any],
) -> Step:
    """Move into `target`, resolving choice states on the way, and compute the new assignee."""
    definition = compiled.definition
    if data != snapshot.data:
        _check_data(compiled, snapshot, data, people)
    entered = [target]
    routes: list[dict[str, Any]] = []
    guard_actor = actor.guard_view()
    view = case_view(snapshot) if compiled.reads_case else None
    while definition.states[entered[-1]].is_choice:
        if len(entered) > len(definition.states):
            raise InvalidData(f"choice states route in a loop: {' → '.join(entered)}")
        here = entered[-1]
        fired = compiled.fire(here, ROUTE, GuardContext(data=data, payload={}, actor=guard_actor, case=view))
        if fired is None or not isinstance(fired.taken, Branch):
            raise InvalidData(f"choice state `{here}` has no branch for this data (no `else`)")
        branch = fired.taken
        tried = definition.states[here].choice
        decided = tried[: tried.index(branch) + 1]
        routes.append(
            {
                "choice": here,
                "to": fired.state,
                "when": branch.when.text if branch.when else "else",
                "values": _values(" ".join(b.when.text for b in decided if b.when), data),
            }
        )
        entered.append(fired.state)
    if routes:
        detail["routes"] = routes
    final = definition.states[entered[-1]]
    principal = actor.delegated.get(role or "", actor.id)
    assignee = _assignee(final, data, people, (*snapshot.fired, (event, principal)), snapshot, detail)
    if final.parallel is not None:
        from sopflow.engine.branches import BRANCHES
        from sopflow.engine.branches import entered as branches_entered

        detail[BRANCHES] = branches_entered(final.parallel, data, people, detail)
        if snapshot.lingering and "lingering" not in detail:
            # Entering a parallel state again ends the branches its last join left running.
            detail["lingering"] = {}
    if final.assign is not None and final.assign.kind in ("least_loaded", "round_robin"):
        # The load of other cases decided it: recorded, so that `audit verify` can replay who holds it.
        detail["assignee"] = assignee
    change = data_change(snapshot.data, data)
    return Step(
        event=event,
        from_state=snapshot.state,
        to_state=final.name,
        role=role,
        on_behalf_of=actor.delegated.get(role) if role else None,
        data=data,
        data_change=change,
        entered=tuple(entered),
        assignee=assignee,
        detail=detail,
    )


def _assignee(
    state: State,
    data: Mapping[str, Any],
    people: People,
    fired: Sequence[tuple[str, str]] = (),
    snapshot: Snapshot | None = None,
    detail: dict[str, Any] | None = None,
) -> str | None:
    if state.assign is None:
        return None
    if state.assign.kind in ("least_loaded", "round_robin"):
        return _distributed(state, data, people, fired, snapshot, {} if detail is None else detail)
    if state.assign.kind == "from_data":
        value = data.get(state.assign.value)
        if value is not None and not isinstance(value, str):
            raise InvalidData(f"data field `{state.assign.value}` must hold a user id, not {value!r}")
        if value is not None and value not in people.org.users:
            raise InvalidData(
                f"data field `{state.assign.value}` names `{value}`, who is not in the org",
                hint="use a user id from org.yaml",
            )
        return value
    if state.assign.kind == "fired_by":
        # The same specialist as the earlier step: whoever fired the event last (for whom a delegate
        # acted), as the case's accepted steps say.
        return next((who for event, who in reversed(fired) if event == state.assign.value), None)
    return None


def _distributed(
    state: State,
    data: Mapping[str, Any],
    people: People,
    fired: Sequence[tuple[str, str]],
    snapshot: Snapshot | None,
    detail: dict[str, Any],
) -> str | None:
    """The member a `least_loaded` or `round_robin` state gives the case to, passing by those `not_by`
    names and those at their role's `wip_limit`; what they held is written into `detail` (`wip`)."""
    assert state.assign is not None
    role = state.assign.value
    members = list(people.members(role))
    if state.assign.not_by:
        # Not the person who did it last time (or whoever else `not_by` names): passed by.
        seen = replace(snapshot or Snapshot(state.name, data, ""), fired=tuple(fired))
        excluded = excluded_people(state.assign.not_by, seen, data)
        members = [m for m in members if m not in excluded]
    held = _work_in_progress(role, members, people, detail)
    if state.assign.kind == "round_robin":
        turn = people.members(role)
        last = people.last_turn(state.name) if people.last_turn is not None else None
        if not turn:
            return None
        # The member after the one given the last case, in the org's order (the first after a member
        # who left the role, or when nobody was given one yet), passing by those at their limit.
        first = (turn.index(last) + 1) % len(turn) if last in turn else 0
        return next((m for m in (*turn[first:], *turn[:first]) if m in members), None)
    if held is not None:
        # The counts just read decide it (ties by the org's order), so `audit verify` decides it again.
        return min(members, key=lambda m: held[m]) if members else None
    if state.assign.not_by:
        if people.least_loaded_of is not None:
            return people.least_loaded_of(members)
        return members[0] if members else None
    return people.least_loaded(role)


def _work_in_progress(
    role: str, members: list[str], people: People, detail: dict[str, Any]
) -> dict[str, int] | None:
    """Under a role's `wip_limit`, what each candidate holds (recorded as `wip` in `detail`); those at
    the limit are removed from `members`, unless every one is: the case is then given anyway, noted as
    `over_limit`, since pushed work must have an owner whose deadlines escalate (a manager reassigns)."""
    limit = people.org.roles[role].wip_limit if role in people.org.roles else None
    if limit is None or people.open_cases is None or not members:
        return None
    held = {m: people.open_cases(m) for m in members}
    free = [m for m in members if held[m] < limit]
    detail["wip"] = {"limit": limit, "held": held}
    if free:
        members[:] = free
    else:
        detail["wip"]["over_limit"] = True
    return held


def _start_work(state: State, snapshot: Snapshot, actor: Actor) -> Step:
    """The assignee (or whoever stands in for them) starts the state's work: a step that stays."""
    if snapshot.assignee is None:
        raise Refused(
            NotPermitted(
                f"nobody holds the work of `{state.name}` yet: it is started by its assignee",
                hint="claim it first" if state.assign and state.assign.kind == "claim" else "assign it first",
            ),
            None,
            {"needed": [ASSIGNEE]},
        )
    if acting_role(actor, (ASSIGNEE,), snapshot) is None:
        raise Refused(
            NotPermitted(
                f"{actor.id} may not start the work of `{state.name}`: it is {snapshot.assignee}'s",
                hint="the assignee starts it; a manager may reassign it",
            ),
            None,
            {"needed": [ASSIGNEE]},
        )
    return Step(
        event=START_WORK,
        from_state=state.name,
        to_state=state.name,
        role=ASSIGNEE,
        on_behalf_of=actor.delegated.get(ASSIGNEE),
        data=dict(snapshot.data),
        data_change={},
        entered=(),
        assignee=snapshot.assignee,
        detail={"started_by": actor.id},
    )


def _claim(state: State, role: str, snapshot: Snapshot, actor: Actor, people: People) -> Step:
    if role not in actor.roles:
        raise Refused(
            NotPermitted(f"{actor.id} may not claim a case in `{state.name}`: it needs the role {role}"),
            None,
            {"needed": [role]},
        )
    if snapshot.assignee is not None:
        raise Refused(
            NotPermitted(
                f"the case is already claimed by {snapshot.assignee}",
                hint="ask the role's manager to reassign it",
            ),
            role,
            {"assignee": snapshot.assignee},
        )
    passed_by = state.assign.not_by if state.assign is not None else ()
    refusal = _separation(actor, role, passed_by, snapshot, f"claim a case in `{state.name}`")
    if refusal is not None:
        raise refusal
    detail: dict[str, Any] = {"claimed_by": actor.id}
    limit = people.org.roles[role].wip_limit if role in people.org.roles else None
    if limit is not None and people.open_cases is not None:
        # Work in progress per person: what they hold now is recorded, for `audit verify` to decide again.
        held = people.open_cases(actor.id)
        if held >= limit:
            raise Refused(
                NotPermitted(
                    f"{actor.id} holds {held} open case(s), the most a {role} may hold at once "
                    f"(wip_limit {limit})",
                    hint="finish one, or hand one on (reassign), before claiming another",
                ),
                role,
                {"rule": "wip-limit", "held": held, "limit": limit},
            )
        detail["held"] = held
    return Step(
        event=CLAIM,
        from_state=state.name,
        to_state=state.name,
        role=role,
        on_behalf_of=actor.delegated.get(role),
        data=dict(snapshot.data),
        data_change={},
        entered=(),
        assignee=actor.id,
        detail=detail,
    )


def _vote(
    compiled: CompiledDefinition,
    state: State,
    approval: Approval,
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    payload: Mapping[str, Any],
    people: People,
) -> Step:
    decision: Decision = "approve" if event == APPROVE else "reject"
    eligible = [r for r in approval.roles if r in actor.roles]
    if not eligible:
        raise Refused(
            NotPermitted(
                f"{actor.id} may not vote in `{state.name}`: the approval needs {_roles_text(approval.roles)}"
            ),
            None,
            {"needed": list(approval.roles)},
        )
    filled = {v.role for v in snapshot.votes if v.decision == "approve"}
    own_first = sorted(eligible, key=lambda r: r in actor.delegated)
    role = next((r for r in own_first if r not in filled), own_first[0])
    principal = actor.delegated.get(role, actor.id)
    if not approval.submitter_may_approve and snapshot.submitter in (actor.id, principal):
        raise Refused(
            NotPermitted(
                f"{actor.id} submitted this case into `{state.name}` and may not vote on it "
                "(separation of duties)"
                if snapshot.submitter == actor.id
                else f"{actor.id} acts for {principal}, who submitted this case, and may not vote on it "
                "(separation of duties)",
                hint="another holder of the approving role must vote",
            ),
            role,
            {"rule": "separation-of-duties"},
        )
    refusal = _separation(actor, role, approval.not_by, snapshot, f"vote in `{state.name}`")
    if refusal is not None:
        raise refusal
    if any(v.voter in (actor.id, principal) for v in snapshot.votes):
        raise Refused(
            NotPermitted(
                f"{principal if principal != actor.id else actor.id} has already voted in `{state.name}`; "
                "one person counts once",
                hint="another approver must vote",
            ),
            role,
            {"rule": "one-person-one-vote"},
        )
    data = _vote_data(compiled, state, approval, snapshot, actor, decision, payload, people)
    votes = (*snapshot.votes, Vote(principal, role, decision))
    excluded = set(excluded_people(approval.not_by, snapshot, snapshot.data))
    outcome = _tally(approval, votes, snapshot.submitter, people, excluded)
    detail: dict[str, Any] = {
        "votes": [{"voter": v.voter, "role": v.role, "decision": v.decision} for v in votes],
        "rule": approval.rule,
        "outcome": outcome,
    }
    if payload:
        detail["payload"] = dict(payload)
    if data is not None and "computed" in data[1]:
        detail["computed"] = data[1]["computed"]
    new_data = data[0] if data is not None else dict(snapshot.data)
    if outcome == "pending":
        if new_data != snapshot.data:
            _check_data(compiled, snapshot, new_data, people)
        change = {
            k: [snapshot.data.get(k), v]
            for k, v in sorted(new_data.items())
            if k not in snapshot.data or snapshot.data[k] != v
        }
        return Step(
            event=event,
            from_state=state.name,
            to_state=state.name,
            role=role,
            on_behalf_of=actor.delegated.get(role),
            data=new_data,
            data_change=change,
            entered=(),
            assignee=snapshot.assignee,
            detail=detail,
        )
    internal = APPROVED if outcome == "approved" else REJECTED
    fired = compiled.fire(state.name, internal, GuardContext(data=snapshot.data, payload={}, actor={}))
    assert fired is not None, "approval exits are unconditional"
    return _enter(compiled, snapshot, actor, event, fired.state, new_data, role, people, detail)


def _vote_data(
    compiled: CompiledDefinition,
    state: State,
    approval: Approval,
    snapshot: Snapshot,
    actor: Actor,
    decision: Decision,
    payload: Mapping[str, Any],
    people: People,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """What a vote's payload does to the data (and the detail to record), or None when it does nothing.
    A payload is refused on a reject, and on an approval that declares none: never silently dropped."""
    if payload and (approval.payload is None or decision == "reject"):
        raise InvalidData(
            f"`{decision}` in `{state.name}` takes no payload"
            + ("" if approval.payload is None else ": only `approve` does"),
            hint=f"fire `{decision}` without --data; a comment (--comment) says why",
        )
    if decision == "reject" or not (approval.payload is not None or approval.set or approval.compute):
        return None
    errors = compiled.payload_errors(approval, payload)
    if errors:
        raise InvalidData(
            f"the payload of `approve` is not valid: {errors[0]}",
            hint=_payload_hint(APPROVE, approval.payload),
            errors=errors,
        )
    check_people(user_fields(approval.payload), payload, people.org, "payload field")
    context = GuardContext(
        data=snapshot.data,
        payload=payload,
        actor=actor.guard_view(),
        case=case_view(snapshot) if compiled.reads_case else None,
    )
    detail: dict[str, Any] = {}
    data = _changed_data(
        compiled, snapshot.data, approval.set, approval.copy, approval.compute, context, detail
    )
    return data, detail


def _check_data(
    compiled: CompiledDefinition, snapshot: Snapshot, data: dict[str, Any], people: People
) -> None:
    """Refuse data a step would leave invalid: against the `data` schema, and people in user fields."""
    errors = compiled.data_errors(data)
    if errors:
        raise InvalidData(
            f"the step would leave the case's data invalid: {errors[0]}",
            hint="the definition's `set`/`copy` and its `data` schema disagree; fix the definition",
            errors=errors,
        )
    changed = [k for k in data if k not in snapshot.data or snapshot.data[k] != data[k]]
    definition = compiled.definition
    lists = definition.user_lists() if people.lists_checked else None
    check_people(definition.user_fields(), data, people.org, "data field", changed, lists)


def _tally(
    approval: Approval,
    votes: Sequence[Vote],
    submitter: str | None,
    people: People,
    excluded: set[str] | None = None,
) -> Literal["approved", "rejected", "pending"]:
    approvers = {v.voter for v in votes if v.decision == "approve"}
    rejecters = {v.voter for v in votes if v.decision == "reject"}
    if rejecters and approval.veto:
        return "rejected"
    if rule_met(approval, approvers, people):
        return "approved"
    candidates = set(approvers)
    for role in approval.roles:
        candidates.update(people.members(role))
    candidates -= rejecters
    candidates -= excluded or set()
    if not approval.submitter_may_approve and submitter is not None:
        candidates.discard(submitter)
    if not rule_met(approval, candidates, people):
        return "rejected"
    return "pending"


def rule_met(approval: Approval, approvers: set[str], people: People) -> bool:
    """Whether these people, approving, satisfy the rule. For all_of each role needs a distinct person:
    a person holding two of the roles fills one slot only."""
    holders = {r: {u for u in approvers if u in people.members(r)} for r in approval.roles}
    if approval.rule == "any_of":
        return any(holders.values())
    if approval.rule == "quorum":
        return len(holders[approval.roles[0]]) >= approval.at_least
    return _matching_covers(list(approval.roles), holders)


def _matching_covers(roles: list[str], holders: Mapping[str, set[str]]) -> bool:
    """Whether every role can be given a different person who holds it (bipartite matching)."""
    taken_by: dict[str, str] = {}

    def place(role: str, seen: set[str]) -> bool:
        for person in sorted(holders[role]):
            if person in seen:
                continue
            seen.add(person)
            if person not in taken_by or place(taken_by[person], seen):
                taken_by[person] = role
                return True
        return False

    return all(place(role, set()) for role in roles)


def _payload_hint(event: str, payload: Mapping[str, Any] | None) -> str:
    """The fields `event` takes, named from its payload schema (required ones first, marked *)."""
    schema = payload or {}
    required = list(schema.get("required", ()))
    fields = required + [f for f in schema.get("properties", {}) if f not in required]
    if not fields:
        return f"`{event}` takes no payload: fire it without --data"
    named = ", ".join(f + ("*" if f in required else "") for f in fields)
    example = ", ".join(f'"{f}": ...' for f in (required or fields[:1]))
    return f"`{event}` takes {named} (* required), e.g. --data '{{{example}}}'"


def _values(expression: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {name: data.get(name) for name in dict.fromkeys(_DATA_FIELD.findall(expression))}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


_SPECIAL_WORDS = {ASSIGNEE: "the case's assignee", STARTER: "whoever started the case", SYSTEM: "the system"}


def _roles_text(roles: Sequence[str]) -> str:
    shown = [_SPECIAL_WORDS.get(r, r) for r in roles]
    return " or ".join(shown) if shown else "no role"


def start_step(
    compiled: CompiledDefinition,
    actor: Actor,
    data: Mapping[str, Any],
    people: People,
    now: str | None = None,
) -> Step:
    """Decide the start of a case: check its data and the definition's `start` rule (who may start it, on
    what condition), then enter the initial state (routing any choice). `now` is the start's time (ISO
    8601), what a guard sees as `case.started_at`."""
    if not isinstance(data, dict):
        raise InvalidData("a case's data must be a JSON object", hint='e.g. --data \'{"title": "..."}\'')
    errors = compiled.data_errors(data)
    if errors:
        raise InvalidData(
            f"the data does not fit {compiled.definition.key}: {errors[0]}",
            hint="`sopflow defs show ID` lists the fields a case needs",
            errors=errors,
        )
    empty = Snapshot(state="", data={}, starter=actor.id, started_at=now, entered_at=now, now=now)
    _check_start(compiled, empty, actor, data)
    rule = compiled.definition.start
    held = sorted(actor.roles)
    if rule is not None and rule.by:
        held = [r for r in rule.by if r in actor.roles]
    role = next(iter(held), None)
    return _enter(compiled, empty, actor, "start", compiled.definition.initial, dict(data), role, people, {})


def _check_start(
    compiled: CompiledDefinition, empty: Snapshot, actor: Actor, data: Mapping[str, Any]
) -> None:
    """Refuse a start the definition's `start` rule does not allow (NotPermitted, GuardRefused): nothing is
    written, as there is no case yet to record the attempt on."""
    rule = compiled.definition.start
    if rule is None or actor.id == SYSTEM:
        # The system starts a case only for one of the definition's own schedules: the definition said
        # so itself, and `start` says who else may.
        return
    key = compiled.definition.key
    if rule.by and not any(r in actor.roles for r in rule.by):
        raise NotPermitted(
            f"{actor.id} may not start a case of {key}: it needs {_roles_text(rule.by)}",
            hint=f"{actor.id} holds {_roles_text(sorted(actor.roles)) if actor.roles else 'no role'}",
        )
    if rule.when is None:
        return
    context = GuardContext(data=data, payload={}, actor=actor.guard_view(), case=case_view(empty))
    if not compiled.check(rule.when, context):
        explain = str(rule.explain) if rule.explain else None
        raise GuardRefused(
            f"a case of {key} may not be started: "
            + (explain or f"the condition `{rule.when.text}` does not hold"),
            hint=f"the condition is `{rule.when.text}`" if explain else "change the start data",
        )


SYSTEM_ACTOR = Actor(id=SYSTEM, roles=frozenset())
"""Who fires timeouts and escalations."""


def actor_from_org(org: Org, user_id: str, delegated: Mapping[str, str] | None = None) -> Actor:
    """The acting person as the org knows them, with any roles delegated to them (role → delegator)."""
    user = org.users.get(user_id)
    if user is None:
        from difflib import get_close_matches

        close = get_close_matches(user_id, list(org.users), n=1)
        raise NotFound(
            f"user `{user_id}` is not in the org `{org.id}`",
            hint=f"did you mean `{close[0]}`?" if close else "pass a user id from org.yaml with --as",
        )
    extra = dict(delegated or {})
    return Actor(
        id=user.id,
        roles=frozenset(user.roles) | frozenset(extra),
        department=user.department,
        delegated={r: who for r, who in extra.items() if r not in user.roles},
        stands_in_for=frozenset(extra.values()),
    )


def data_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """What a step changed in the data, as the audit record keeps it: field → [before, after], for every
    field set or changed (by name, so that the record's canonical form does not depend on order)."""
    return {k: [before.get(k), after[k]] for k in sorted(after) if k not in before or before[k] != after[k]}
