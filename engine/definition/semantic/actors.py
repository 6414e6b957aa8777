"""Who acts: roles the org must define, approvals the org's people can decide (with separation of
duties), transitions nobody may fire, and working states without an owner."""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.engine.definition.model import SPECIAL_ACTORS, Approval, Definition, Org, Path, State
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.errors import Problem


def _role_refs(ctx: Context) -> Iterator[tuple[str, Path, bool]]:
    """Every role the definition names, with its path and whether a user id is also accepted there."""
    for s in ctx.defn.all_states():
        if s.owner:
            yield s.owner, (*s.path, "owner"), False
        for t in s.transitions:
            if ctx.raw((*t.path, "by")) is None:
                continue  # the owner's role, already named above
            yield from ((r, (*t.path, "by", i), False) for i, r in enumerate(t.by) if r not in SPECIAL_ACTORS)
        if s.approval is not None:
            yield from _approval_role_refs(s.approval)
        if s.assign is not None and s.assign.kind in ("least_loaded", "claim", "round_robin"):
            yield s.assign.value, (*s.assign.path, s.assign.kind), False
        if s.timeout is not None:
            single = isinstance(ctx.raw((*s.timeout.path, "notify")), str)
            for i, name in enumerate(s.timeout.notify):
                yield name, (*s.timeout.path, "notify") if single else (*s.timeout.path, "notify", i), True
    for d in ctx.defn.deadlines:
        for e in d.escalate:
            if e.action in ("notify", "reassign") and e.target:  # no target: bad-escalation
                yield e.target, (*e.path, e.action), e.action == "notify"


def _approval_role_refs(a: Approval) -> Iterator[tuple[str, Path, bool]]:
    if a.rule == "quorum":
        yield a.roles[0], (*a.path, "quorum", "role"), False
    else:
        yield from ((r, (*a.path, a.rule, i), False) for i, r in enumerate(a.roles))


def check_roles(ctx: Context) -> Iterator[Problem]:
    org = ctx.org
    if org is None:
        return
    for name, path, user_ok in _role_refs(ctx):
        if name in org.roles or (user_ok and name in org.users):
            continue
        what = "role or user" if user_ok else "role"
        candidates = [*org.roles, *org.users] if user_ok else list(org.roles)
        yield ctx.problem(
            path,
            "unknown-role",
            f"the org has no {what} `{name}`",
            did_you_mean(name, candidates) or f"roles are defined in {org.file}",
        )


def _distinct_people(org: Org, roles: tuple[str, ...], excluded: str | None = None) -> int:
    """How many roles can be filled by different people at once (a bipartite matching), without
    `excluded`."""
    holder: dict[str, str] = {}

    def assign(role: str, tried: set[str]) -> bool:
        for person in org.members(role):
            if person in tried or person == excluded:
                continue
            tried.add(person)
            if person not in holder or assign(holder[person], tried):
                holder[person] = role
                return True
        return False

    return sum(1 for role in roles if assign(role, set()))


def _approval_shortfall(org: Org, a: Approval, excluded: str | None = None) -> str | None:
    """Why the org's members (without `excluded`) cannot make the approval's decision; None if they can."""
    if a.rule == "quorum":
        members = [m for m in org.members(a.roles[0]) if m != excluded]
        if a.at_least > len(members):
            role = a.roles[0]
            return f"the quorum needs {a.at_least} members of `{role}`, but there are only {len(members)}"
    elif a.rule == "all_of":
        filled = _distinct_people(org, a.roles, excluded)
        if filled < len(a.roles):
            needed = len(a.roles)
            return f"all_of needs {needed} different people, one per role, but the members can fill {filled}"
    elif not any(m != excluded for r in a.roles for m in org.members(r)):
        return "nobody holds any of these roles"
    return None


def _approval_place(a: Approval) -> tuple[Path, bool]:
    """Where to point at an approval's voters: at_least for a quorum, else the rule's key."""
    if a.rule == "quorum":
        return (*a.path, "quorum", "at_least"), False
    return (*a.path, a.rule), True


def check_quorum(ctx: Context) -> Iterator[Problem]:
    org = ctx.org
    if org is None:
        return
    for s in ctx.defn.states.values():
        a = s.approval
        if a is None or any(r not in org.roles for r in a.roles):
            continue  # an unknown role is reported as unknown-role
        path, key = _approval_place(a)
        short = _approval_shortfall(org, a)
        if short is not None:
            hint = "lower at_least, or add members" if a.rule == "quorum" else "add members"
            yield ctx.problem(
                path, "bad-quorum", f"in the org, {short}", f"{hint} to the roles in the org", key=key
            )
        elif not a.submitter_may_approve:
            yield from _submitter_shortfall(ctx, org, s, a, path, key)


def _submitter_shortfall(
    ctx: Context, org: Org, s: State, a: Approval, path: Path, key: bool
) -> Iterator[Problem]:
    """Separation of duties: the person who moved the case here may not vote; can the others decide?"""
    voters = {m for r in a.roles for m in org.members(r)}
    for person in sorted(_submitters(ctx.defn, org, s.name) & voters):
        short = _approval_shortfall(org, a, person)
        if short is not None:
            yield ctx.problem(
                path,
                "quorum-needs-submitter",
                f"if `{person}` moves a case into `{s.name}`, they may not vote (`submitter_may_approve` is "
                f"false), and without them {short}",
                (
                    "add members to the role, lower at_least,"
                    if a.rule == "quorum"
                    else "add members to the roles,"
                )
                + " or set `submitter_may_approve: true`",
                key=key,
                severity="warning",
            )
            return


def _submitters(defn: Definition, org: Org, target: str) -> set[str]:
    """Who may have moved a case into `target` (the runtime's submitter): whoever may fire an event
    that leads there, directly or through choice states, or cast the last vote of an approval that does."""
    everyone = set(org.users)
    people: set[str] = set()
    seen: set[str] = set()
    todo = [target]
    while todo:
        here = todo.pop()
        if here in seen:
            continue
        seen.add(here)
        if here == defn.initial:
            people |= everyone  # whoever starts the case
        for s in defn.states.values():
            for t in s.transitions:
                if t.target == here:
                    special = any(r in SPECIAL_ACTORS for r in t.by)
                    people |= everyone if special else {m for r in t.by for m in org.members(r)}
            todo += [s.name for b in s.choice if b.target == here]
            if s.approval is not None and here in (s.approval.approved, s.approval.rejected):
                people |= {m for r in s.approval.roles for m in org.members(r)}
    return people


def _system_events(defn: Definition) -> set[tuple[str, str]]:
    """(state, event) pairs a timer fires: those need no person to be allowed."""
    fired = {(s.name, s.timeout.fire) for s in defn.states.values() if s.timeout is not None}
    escalated = {e.target for d in defn.deadlines for e in d.escalate if e.action == "fire"}
    fired |= {(s.name, t.event) for s in defn.states.values() for t in s.transitions if t.event in escalated}
    return fired


def check_actors(ctx: Context) -> Iterator[Problem]:
    system = _system_events(ctx.defn)
    for s in ctx.defn.states.values():
        for t in s.transitions:
            if not t.by and (s.name, t.event) not in system:
                yield ctx.problem(
                    t.path,
                    "no-actor",
                    f"nobody may fire `{t.event}` in `{s.name}`: it has no `by` and the state has no owner",
                    "add `by: [ROLE]` to the transition or an `owner` to the state",
                    key=True,
                )


def check_owners(ctx: Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        if not (s.final or s.is_choice or s.owner or s.automatic):
            yield ctx.problem(
                s.path,
                "no-owner",
                f"working state `{s.name}` has no owner",
                "name the responsible role with `owner: ROLE`",
                key=True,
                severity="warning",
            )
