"""People in the loop: delegations (a role handed to someone for a period), reassigning a case, and each
person's task list.

Delegations are rows of an append-only table: a grant, and later perhaps its revocation; a grant ends by
itself at `ends_at`. While it runs, the delegate acts in the delegated roles and every record says
"B on behalf of A". Reassigning is a step of the case (audited in its chain) that only the owning role's
manager role or an administrator may take.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from sopflow.engine import branches
from sopflow.engine.audit import AuditRecord, iso
from sopflow.engine.casework import (
    check_comment,
    check_limit,
    fired_of,
    may_fire,
    required_fields,
    votes_of,
)
from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.control import closed_case
from sopflow.engine.definition.model import APPROVE, REJECT, SPECIAL_ACTORS, Definition, Org, State
from sopflow.engine.errors import InvalidData, NotPermitted, UsageError
from sopflow.engine.step import (
    CLAIM,
    Actor,
    Refused,
    Snapshot,
    acting_role,
    excluded_people,
    standing_in,
)
from sopflow.engine.store import (
    CaseChange,
    CaseQuery,
    CaseRow,
    DelegationRow,
    Fired,
    Reads,
    Store,
    StoredVote,
    TimerRow,
    Write,
)
from sopflow.engine.store.access import admitting
from sopflow.engine.store.records import Scope


class Host(Protocol):
    """What this module needs of the engine, all of it public: the runtime hands itself in (it imports
    this module, never the other way round)."""

    store: Store
    clock: Callable[[], datetime]

    def org(self) -> Org: ...

    def actor(self, user_id: str) -> Actor: ...

    def definitions(self) -> list[Definition]: ...

    def compiled(self, definition_id: str, version: int | None = None) -> CompiledDefinition: ...

    @property
    def audit_record(self) -> Callable[..., AuditRecord]: ...


@dataclass(frozen=True, slots=True)
class Waiting:
    """A case where one person can act now, as stored, and how urgent it is (the runtime makes a Task of
    it)."""

    row: CaseRow
    events: tuple[str, ...]
    reason: str
    """Why it is theirs: assigned, a role they hold (or hold for someone), an approval awaiting their vote."""
    waiting_since: datetime
    due_at: datetime | None
    deadline: str | None


def is_administrator(org: Org, user_id: str) -> bool:
    user = org.users[user_id]
    return any(org.roles[r].administrator for r in user.roles if r in org.roles)


def delegate(
    engine: Host,
    delegator: str,
    delegate_to: str,
    *,
    actor: str,
    ends_at: datetime,
    starts_at: datetime | None = None,
    roles: Sequence[str] = (),
    reason: str | None = None,
) -> DelegationRow:
    """Hand `roles` (default: all of the delegator's roles) to `delegate_to` from `starts_at` (default now)
    until `ends_at`. Only the delegator or an administrator may do it."""
    org = engine.org()
    for user in (delegator, delegate_to, actor):
        engine.actor(user)
    if actor != delegator and not is_administrator(org, actor):
        raise NotPermitted(
            f"{actor} may not delegate {delegator}'s roles",
            hint="only the person themselves or an administrator may delegate",
        )
    if delegator == delegate_to:
        raise UsageError("a person cannot delegate to themselves")
    held = org.users[delegator].roles
    unknown = [r for r in roles if r not in held]
    if unknown:
        raise InvalidData(
            f"{delegator} does not hold {', '.join(unknown)}",
            hint=f"{delegator} holds {', '.join(held) or 'no role'}",
        )
    now = engine.clock()
    begin = starts_at or now
    if ends_at <= begin:
        raise UsageError("a delegation must end after it starts", hint="give --until a later time")
    return engine.store.add_delegation(
        DelegationRow(
            0, "grant", delegator, delegate_to, tuple(roles), begin, ends_at, None, actor, now, reason
        )
    )


def revoke(engine: Host, delegation_id: int, *, actor: str, reason: str | None = None) -> DelegationRow:
    grant = engine.store.delegation(delegation_id)
    org = engine.org()
    engine.actor(actor)
    if actor not in (grant.delegator, grant.delegate) and not is_administrator(org, actor):
        raise NotPermitted(
            f"{actor} may not revoke delegation {delegation_id}",
            hint="the delegator, the delegate or an administrator may revoke it",
        )
    now = engine.clock()
    return engine.store.add_delegation(
        DelegationRow(
            0, "revoke", grant.delegator, grant.delegate, grant.roles, now, now, grant.id, actor, now, reason
        )
    )


def reassign(engine: Host, case_id: int, to_user: str, *, actor: str, comment: str | None = None) -> Fired:
    """Give the case's current step to `to_user`, who must hold the state's owning role. Allowed to the
    manager role of that role and to administrators; refusals are audited like any other."""
    check_comment(comment)
    org = engine.org()
    engine.actor(actor)
    engine.actor(to_user)
    refusal: list[NotPermitted] = []
    now = engine.clock()

    def decide(row: CaseRow, reads: Reads) -> Write:
        refusal.clear()
        compiled = engine.compiled(row.definition_id, row.definition_version)
        state = compiled.definition.states[row.state]
        if not row.open:  # ended, cancelled, closed by its parent or suspended: no step to give
            raise closed_case(row, engine.store.history(row.id), compiled.definition)
        role = _owning_role(state)
        try:
            _check_reassign(org, state, role, actor, to_user, row.assignee)
        except Refused as refused:
            assert isinstance(refused.error, NotPermitted)
            refusal.append(refused.error)
            record = engine.audit_record(
                row,
                compiled,
                now,
                actor=actor,
                event="reassign",
                to_state=None,
                accepted=False,
                comment=comment,
                detail=refused.detail,
                reason=f"{refused.error.kind}: {refused.error.message}",
            )
            return Write(record)
        record = engine.audit_record(
            row,
            compiled,
            now,
            actor=actor,
            role=_handing_role(org, actor, role, row.assignee),
            event="reassign",
            to_state=row.state,
            accepted=True,
            comment=comment,
            detail={"from": row.assignee, "to": to_user},
        )
        change = CaseChange(
            state=row.state,
            open=row.open,
            data=row.data,
            assignee=to_user,
            submitter=row.submitter,
            entered=False,
        )
        return Write(record, change)

    fired = engine.store.fire(case_id, decide, now=now)
    if refusal:
        raise refusal[0]
    return fired


def reassign_role(
    org: Org, state: State, actor: str, to_user: str, assignee: str | None = None
) -> str | None:
    """The role in which `actor` may give a case in `state` (held by `assignee`) to `to_user` (the role its
    record names); raises `Refused` when they may not. `audit verify` checks recorded reassignments with
    it."""
    role = _owning_role(state)
    _check_reassign(org, state, role, actor, to_user, assignee)
    return _handing_role(org, actor, role, assignee)


def _handing_role(org: Org, actor: str, role: str | None, assignee: str | None) -> str | None:
    """The manager or administrator role a reassignment is made in; for the assignee handing on their own
    task, the role that owns the state."""
    acting = _acting_as(org, actor, role)
    return acting if acting is not None or actor != assignee else role


def _owning_role(state: State) -> str | None:
    if state.assign is not None and state.assign.kind in ("least_loaded", "claim", "round_robin"):
        return state.assign.value
    return state.owner


def _acting_as(org: Org, actor: str, role: str | None) -> str | None:
    manager = org.roles[role].manager if role and role in org.roles else None
    if manager and manager in org.users[actor].roles:
        return manager
    return next((r for r in org.users[actor].roles if org.roles.get(r) and org.roles[r].administrator), None)


def _check_reassign(
    org: Org, state: State, role: str | None, actor: str, to_user: str, assignee: str | None = None
) -> None:
    if state.final or state.is_choice:
        raise Refused(NotPermitted(f"a case in `{state.name}` has no step to reassign"), None, {})
    # The assignee may hand their own task on, to another member of the role that owns the state.
    if _acting_as(org, actor, role) is None and (actor != assignee or role is None):
        manager = org.roles[role].manager if role and role in org.roles else None
        raise Refused(
            NotPermitted(
                f"{actor} may not reassign a case in `{state.name}`",
                hint=f"the {manager} role or an administrator may" if manager else "an administrator may",
            ),
            None,
            {"needed": [manager] if manager else ["administrator"]},
        )
    if role and role not in org.users[to_user].roles:
        raise Refused(
            NotPermitted(
                f"{to_user} does not hold {role}, the role that owns `{state.name}`",
                hint=f"members of {role}: {', '.join(org.members(role))}",
            ),
            None,
            {"to": to_user, "role": role},
        )


def tasks(
    engine: Host,
    org: Org,
    person: Actor,
    *,
    limit: int = 50,
    scope: Scope | None = None,
    modify: Scope | None = None,
) -> list[Waiting]:
    """Every open case where `user_id` can act now, most urgent first (nearest deadline, then the longest
    waiting). Candidates come from indexed searches (assigned to them; in each state their roles act in),
    never from a scan of all cases, sent as one statement; the votes cast on the approval candidates and
    the running deadlines of the tasks found are read in one statement each."""
    user_id = person.id
    page = limit * 4
    check_limit(page)
    places = {
        (d.id, s.name)
        for d in engine.definitions()
        for s in d.states.values()
        if _role_may_act(s, person.roles) or (not s.final and _may_act_after_join(d, person.roles))
    }
    queries = [CaseQuery(assignee=user_id, open=True, limit=page, scope=scope)]
    # A delegation covers the cases assigned to whoever delegated to them, not only their roles.
    queries += [
        CaseQuery(assignee=who, open=True, limit=page, scope=scope) for who in sorted(person.stands_in_for)
    ]
    queries += [
        CaseQuery(definition_id=d, state=s, open=True, limit=page, scope=scope) for d, s in sorted(places)
    ]
    candidates: dict[int, CaseRow] = {}
    for row in engine.store.cases_each(queries):
        candidates.setdefault(row.id, row)
    voting = [r.id for r in candidates.values() if _may_vote(_state_of(engine, r), person.roles)]
    votes = engine.store.all_votes(voting) if voting else {}
    found: dict[int, tuple[CaseRow, tuple[str, ...], str]] = {}
    for row in candidates.values():
        if modify is not None and not admitting(
            modify, row.definition_id, row.state, row.starter, row.assignee, row.submitter
        ):
            continue  # the permission matrix does not let them take a step on it
        events, reason = _what_they_may_do(engine, row, person, org, votes.get(row.id, []))
        if events:
            found[row.id] = (row, events, reason)
    running = engine.store.running_deadlines(list(found)) if found else {}
    far = datetime.max.replace(tzinfo=engine.clock().tzinfo)
    urgent: list[tuple[datetime, datetime, int, TimerRow | None]] = []
    for case_id, (row, _events, _reason) in found.items():
        soonest = running[case_id][0] if case_id in running else None  # soonest first
        urgent.append((soonest.due_at if soonest else far, row.entered_at, case_id, soonest))
    urgent.sort(key=lambda u: u[:3])
    out: list[Waiting] = []
    for _due, waiting, case_id, soonest in urgent[:limit]:
        row, events, reason = found[case_id]
        due_at, deadline = (soonest.due_at, soonest.name) if soonest else (None, None)
        out.append(Waiting(row, events, reason, waiting, due_at, deadline))
    return out


def _state_of(engine: Host, row: CaseRow) -> State:
    return engine.compiled(row.definition_id, row.definition_version).definition.states[row.state]


def _may_vote(state: State, roles: frozenset[str]) -> bool:
    return state.approval is not None and any(r in roles for r in state.approval.roles)


def _may_act_after_join(definition: Definition, roles: frozenset[str]) -> bool:
    """Whether someone with `roles` may act on a branch a join leaves running (`remaining: finish`),
    wherever the case stands then."""
    return any(
        s.parallel is not None
        and s.parallel.remaining == "finish"
        and bool((branches.roles_acting(s) - SPECIAL_ACTORS) & roles)
        for s in definition.states.values()
    )


def _role_may_act(state: State, roles: frozenset[str]) -> bool:
    if state.final or state.is_choice:
        return False
    needed: set[str] = set()
    for t in state.transitions:
        needed.update(r for r in t.by if r not in SPECIAL_ACTORS)
    if state.approval is not None:
        needed.update(state.approval.roles)
    if state.assign is not None and state.assign.kind == "claim":
        needed.add(state.assign.value)
    needed.update(branches.roles_acting(state) - SPECIAL_ACTORS)
    return bool(needed & roles)


def _what_they_may_do(
    engine: Host, row: CaseRow, person: Actor, org: Org, votes: Sequence[tuple[int, StoredVote]]
) -> tuple[tuple[str, ...], str]:
    """The events `person` may fire on the case now, and why it is theirs; `votes` are the case's
    accepted votes with their audit seq (those of its current visit count)."""
    compiled = engine.compiled(row.definition_id, row.definition_version)
    state = compiled.definition.states[row.state]
    # Who fired what (for `fired:` exclusions) is read from the trail, only for a definition that asks.
    fired = fired_of(engine.store.fired(row.id)) if compiled.reads_history else ()
    snapshot = Snapshot(row.state, row.data, row.starter, row.assignee, row.submitter, fired=fired)
    person = standing_in(person, snapshot)
    events: list[str] = []
    reasons: list[str] = []
    for t in state.transitions:
        role = acting_role(person, t.by, snapshot)
        if role is not None and t.not_by:
            # Separation of duties: not offered to whom it excludes.
            principal = person.delegated.get(role, person.id)
            if {person.id, principal} & set(excluded_people(t.not_by, snapshot, row.data)):
                role = None
        if role is not None and t.event not in events and t.when is not None:
            # A guarded event is listed only when its guard holds now (a dry run of the step decides it;
            # an event whose payload is still to be given is listed, as its guard may read the payload).
            now = iso(engine.clock())
            seen = replace(snapshot, started_at=iso(row.created_at), entered_at=iso(row.entered_at), now=now)
            fields = required_fields(compiled.alternatives(state.name, t.event))
            if not may_fire(compiled, seen, person, t.event, org, fields)[0]:
                role = None
        if role is not None and t.event not in events:
            events.append(t.event)
            who = person.delegated.get(role)
            reasons.append(
                ("assigned to you" if not who else f"assigned to {who}, for whom you stand in")
                if role == "$assignee"
                else f"as {role}" + (f" for {who}" if who else "")
            )
    if _may_vote(state, person.roles):
        current = votes_of(v for seq, v in votes if seq > row.entered_seq)
        voting = Snapshot(row.state, row.data, row.starter, row.assignee, row.submitter, current, fired=fired)
        fields = required_fields(compiled.alternatives(state.name, APPROVE))
        allowed, _ = may_fire(compiled, voting, person, APPROVE, org, fields)
        if allowed:
            events += [APPROVE, REJECT]
            reasons.append("your vote is awaited")
    if (
        state.assign is not None
        and state.assign.kind == "claim"
        and row.assignee is None
        and state.assign.value in person.roles
    ):
        events.append(CLAIM)
        reasons.append(f"unclaimed, for {state.assign.value}")
    lingering = engine.store.lingering(row.id) if state.parallel is None and compiled.reads_lingering else {}
    there = compiled.definition.states.get(str(lingering.get("state")))
    if state.parallel is not None or (there is not None and there.parallel is not None):
        # Each open branch's events (of the state, or left running by its join), as a dry run decides them.
        split = state if state.parallel is not None or there is None else there
        parallel = split.parallel
        assert parallel is not None
        own = state.parallel is not None
        positions = engine.store.branches(row.id, row.entered_seq) if own else lingering["branches"]
        seen = Snapshot(
            row.state, row.data, row.starter, row.assignee, row.submitter,
            branches=positions if own else {}, lingering=lingering,
        )  # fmt: skip
        for name, event in branches.open_events(parallel, positions):
            qualified = f"{name}{branches.SEPARATOR}{event}"
            allowed, _ = may_fire(compiled, seen, person, qualified, org, ("?",))
            written = branches.transitions_of(split, positions, qualified)  # none for a branch's claim
            clock = bool(written) and all(t.clock_only for t in written)
            if allowed and not clock:
                events.append(qualified)
                reasons.append(f"branch {name}")
    return tuple(dict.fromkeys(events)), "; ".join(dict.fromkeys(reasons))
