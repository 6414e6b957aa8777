"""Meaning checks on a built definition (and on an org): what the JSON Schema cannot see.

Each check is a small function that yields `Problem`s pointing at the line and column the process
owner has to change, with a stable code and, where it helps, a hint (often "did you mean ...?").
`check_definition` runs them all and returns every problem, sorted by position, so one run of
`sopflow validate` shows everything that is wrong.
"""

from __future__ import annotations

import datetime
import difflib
import zoneinfo
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from engine.definition.build import parse_duration
from engine.definition.expressions import ExpressionRejected, compile_guard
from engine.definition.loader import Document
from engine.definition.model import (
    APPROVE,
    REJECT,
    SPECIAL_ACTORS,
    Approval,
    Definition,
    Expression,
    Org,
    Path,
    State,
    Transition,
    thawed_json,
)
from engine.errors import Problem, Severity

DURATION_HINT = "write durations like 4h, 30m, 1h30m, 2d"
MAX_DURATION_SECONDS = 100 * 365 * 86400
"""Longer than any real process step, and far below what datetime arithmetic can hold."""
CLAIM = "claim"
"""The built-in event with which a member of the role takes a case of an `assign: {claim: ...}` state."""

SEMANTIC_CODES = (
    "unknown-state",
    "unreachable-state",
    "cannot-finish",
    "no-final-state",
    "final-state-exits",
    "state-kind-conflict",
    "choice-mixed",
    "choice-without-else",
    "else-not-last",
    "else-with-when",
    "unknown-role",
    "duplicate-event",
    "bad-duration",
    "unknown-event",
    "bad-escalation",
    "deadline-never-ends",
    "no-actor",
    "bad-quorum",
    "unknown-data-field",
    "unknown-payload-field",
    "no-owner",
    "bad-data-schema",
    "unknown-schema-keyword",
    "payload-in-choice",
    "deadline-outlives-case",
    "alternatives-differ",
    "timed-event-guard",
    "quorum-needs-submitter",
)
"""Every code `check_definition` itself reports (guard problems carry the expression module's codes)."""

ORG_CODES = ("unknown-role", "unknown-department", "no-administrator", "bad-calendar")
"""Every code `check_org` reports."""


@dataclass(frozen=True, slots=True)
class _Context:
    defn: Definition
    doc: Document
    org: Org | None

    def problem(
        self,
        path: Path,
        code: str,
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
        severity: Severity = "error",
    ) -> Problem:
        return _problem(self.doc, path, code, message, hint, key=key, severity=severity)

    def raw(self, path: Path) -> Any:
        return _raw(self.doc, path)


Check = Callable[[_Context], Iterator[Problem]]


def _problem(
    doc: Document,
    path: Path,
    code: str,
    message: str,
    hint: str | None = None,
    *,
    key: bool = False,
    severity: Severity = "error",
) -> Problem:
    line, col = doc.where(path, key=key)
    return Problem(doc.file, line, col, code, message, hint, severity)


def _raw(doc: Document, path: Path) -> Any:
    """The plain value at `path` in the document, or None when there is none."""
    node: Any = doc.data
    for part in path:
        in_list = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        in_mapping = isinstance(part, str) and isinstance(node, Mapping) and part in node
        if not (in_list or in_mapping):
            return None
        node = node[part]
    return node


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, if one is close enough."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """File, then position, then code: a stable order for people and for tests."""
    return sorted(problems, key=lambda p: (p.file, p.line, p.col, p.code, p.message))


# --- graph helpers -------------------------------------------------------------------------------


def _edges(defn: Definition) -> dict[str, tuple[str, ...]]:
    return {name: tuple(t for t in s.targets() if t in defn.states) for name, s in defn.states.items()}


def _reachable(
    edges: Mapping[str, Iterable[str]], starts: Iterable[str], *, stop: Collection[str] = ()
) -> set[str]:
    """States reachable from `starts` (which count as reached), not walking on out of `stop` states."""
    seen = set(starts)
    queue = deque(seen)
    while queue:
        here = queue.popleft()
        if here in stop:
            continue
        for there in edges.get(here, ()):
            if there not in seen:
                seen.add(there)
                queue.append(there)
    return seen


def _graph_complete(defn: Definition) -> bool:
    """Whether every way out names a known state. When one does not, unknown-state says so, and the
    graph checks stay silent rather than report what follows from the typo."""
    return defn.initial in defn.states and all(
        t in defn.states for s in defn.states.values() for t in s.targets()
    )


def _reverse(edges: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    back: dict[str, list[str]] = {name: [] for name in edges}
    for here, theres in edges.items():
        for there in theres:
            back[there].append(here)
    return back


# --- states and targets ----------------------------------------------------------------------------


def _state_refs(ctx: _Context) -> Iterator[tuple[str, Path]]:
    """Every place that names a state, with its path."""
    defn = ctx.defn
    yield defn.initial, ("initial",)
    for s in defn.states.values():
        for t in s.transitions:
            yield t.target, (*t.path, "to")
        for b in s.choice:
            yield b.target, (*b.path, "else" if b.when is None else "to")
        if s.approval is not None:
            yield s.approval.approved, (*s.approval.path, "approved")
            yield s.approval.rejected, (*s.approval.path, "rejected")
    for d in defn.deadlines:
        yield d.start, (*d.path, "from")
        single = isinstance(ctx.raw((*d.path, "until")), str)
        for i, name in enumerate(d.until):
            yield name, (*d.path, "until") if single else (*d.path, "until", i)


def check_unknown_states(ctx: _Context) -> Iterator[Problem]:
    for name, path in _state_refs(ctx):
        if name not in ctx.defn.states:
            yield ctx.problem(
                path, "unknown-state", f"there is no state `{name}`", did_you_mean(name, ctx.defn.states)
            )


def check_reachability(ctx: _Context) -> Iterator[Problem]:
    defn = ctx.defn
    if not _graph_complete(defn):
        return
    reached = _reachable(_edges(defn), [defn.initial])
    for name, s in defn.states.items():
        if name not in reached:
            yield ctx.problem(
                s.path,
                "unreachable-state",
                f"state `{name}` cannot be reached from the initial state `{defn.initial}`",
                "add a transition, choice branch or approval outcome that leads here, or remove the state",
                key=True,
            )


def check_finishing(ctx: _Context) -> Iterator[Problem]:
    defn = ctx.defn
    finals = defn.final_states
    if not finals:
        yield ctx.problem(
            ("states",),
            "no-final-state",
            "no state is final, so no case can ever close",
            "mark the end states with `final: true`",
            key=True,
        )
        return
    if not _graph_complete(defn):
        return
    edges = _edges(defn)
    can_finish = _reachable(_reverse(edges), finals)
    reached = _reachable(edges, [defn.initial])
    for name, s in defn.states.items():
        if name in reached and name not in can_finish:
            yield ctx.problem(
                s.path,
                "cannot-finish",
                f"a case in state `{name}` can never reach a final state",
                "add a way out that leads (eventually) to a state with `final: true`",
                key=True,
            )


def _kinds(ctx: _Context, s: State) -> list[str]:
    raw = ctx.raw(s.path) or {}
    return [k for k in ("final", "choice", "approval") if k in raw and (k != "final" or raw[k] is True)]


def check_final_exits(ctx: _Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        if not s.final:
            continue
        raw = ctx.raw(s.path) or {}
        for key in ("on", "timeout", "assign"):
            if key in raw:
                yield ctx.problem(
                    (*s.path, key),
                    "final-state-exits",
                    f"final state `{s.name}` has `{key}`, but a closed case has no way out and no work",
                    f"remove `{key}`, or drop `final: true`",
                    key=True,
                )


def check_state_kinds(ctx: _Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        kinds = _kinds(ctx, s)
        for extra in kinds[1:]:
            yield ctx.problem(
                (*s.path, extra),
                "state-kind-conflict",
                f"state `{s.name}` is both `{kinds[0]}` and `{extra}`; a state is at most one of final, "
                "choice or approval",
                "split it into two states",
                key=True,
            )


def check_choice_mixed(ctx: _Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        if not s.is_choice:
            continue
        raw = ctx.raw(s.path) or {}
        for key in ("on", "assign", "timeout"):
            if key in raw:
                yield ctx.problem(
                    (*s.path, key),
                    "choice-mixed",
                    f"choice state `{s.name}` also has `{key}`; a choice state only routes, at once",
                    "move the work into a state before or after the choice",
                    key=True,
                )


def check_choice_branches(ctx: _Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        if not s.choice:
            continue
        last = len(s.choice) - 1
        for i, b in enumerate(s.choice):
            raw = ctx.raw(b.path) or {}
            if b.when is None and "when" in raw:
                yield ctx.problem(
                    (*b.path, "when"),
                    "else-with-when",
                    "an `else` branch has no guard; this `when` is ignored",
                    "make it `- when: ...` with `to: ...`, or drop the `when`",
                    key=True,
                )
            if b.when is None and i < last:
                yield ctx.problem(
                    b.path,
                    "else-not-last",
                    f"the `else` branch of `{s.name}` is not the last one",
                    "the branches after it can never be taken; move `else` to the end",
                )
        if s.choice[last].when is not None:
            yield ctx.problem(
                s.choice[last].path,
                "choice-without-else",
                f"the choice in `{s.name}` has no `else` as its last branch, so a case may match no branch",
                "end the list with `- else: STATE`",
            )


# --- roles ----------------------------------------------------------------------------------------


def _role_refs(ctx: _Context) -> Iterator[tuple[str, Path, bool]]:
    """Every role the definition names, with its path and whether a user id is also accepted there."""
    for s in ctx.defn.states.values():
        if s.owner:
            yield s.owner, (*s.path, "owner"), False
        for t in s.transitions:
            if ctx.raw((*t.path, "by")) is None:
                continue  # the owner's role, already named above
            yield from ((r, (*t.path, "by", i), False) for i, r in enumerate(t.by) if r not in SPECIAL_ACTORS)
        if s.approval is not None:
            yield from _approval_role_refs(s.approval)
        if s.assign is not None and s.assign.kind != "from_data":
            yield s.assign.value, (*s.assign.path, s.assign.kind), False
    for d in ctx.defn.deadlines:
        for e in d.escalate:
            if e.action in ("notify", "reassign") and e.target:  # no target: bad-escalation
                yield e.target, (*e.path, e.action), e.action == "notify"


def _approval_role_refs(a: Approval) -> Iterator[tuple[str, Path, bool]]:
    if a.rule == "quorum":
        yield a.roles[0], (*a.path, "quorum", "role"), False
    else:
        yield from ((r, (*a.path, a.rule, i), False) for i, r in enumerate(a.roles))


def check_roles(ctx: _Context) -> Iterator[Problem]:
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


def check_quorum(ctx: _Context) -> Iterator[Problem]:
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
    ctx: _Context, org: Org, s: State, a: Approval, path: Path, key: bool
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


def check_actors(ctx: _Context) -> Iterator[Problem]:
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


def check_owners(ctx: _Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        if not (s.final or s.is_choice or s.owner):
            yield ctx.problem(
                s.path,
                "no-owner",
                f"working state `{s.name}` has no owner",
                "name the responsible role with `owner: ROLE`",
                key=True,
                severity="warning",
            )


# --- events ---------------------------------------------------------------------------------------


def _event_clash(ctx: _Context, s: State, event: str, why: str) -> Problem:
    return ctx.problem(
        (*s.path, "on", event),
        "duplicate-event",
        f"`{event}` in `{s.name}` clashes with {why}",
        "rename the event",
        key=True,
    )


def check_duplicate_events(ctx: _Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        open_events: set[str] = set()
        for t in s.transitions:
            if t.event in open_events:
                yield ctx.problem(
                    t.path,
                    "duplicate-event",
                    f"this alternative for `{t.event}` can never be taken: an earlier one has no `when`",
                    "give the earlier alternative a guard, or move this one before it",
                )
            elif t.when is None:
                open_events.add(t.event)
        names = {t.event for t in s.transitions}
        if s.approval is not None:
            for vote in (APPROVE, REJECT):
                if vote in names:
                    yield _event_clash(ctx, s, vote, "the approval's vote event of the same name")
        if s.assign is not None and s.assign.kind == "claim" and CLAIM in names:
            yield _event_clash(ctx, s, CLAIM, "the built-in `claim` event of `assign: {claim: ...}`")


def _may_share_actor(ctx: _Context, one: Transition, other: Transition) -> bool:
    """Whether one person may be allowed to fire both transitions."""
    if set(one.by) & set(other.by) or any(r in SPECIAL_ACTORS for r in (*one.by, *other.by)):
        return True
    org = ctx.org
    return org is not None and any(
        set(u.roles) & set(one.by) and set(u.roles) & set(other.by) for u in org.users.values()
    )


def check_alternative_payloads(ctx: _Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        earlier: dict[str, list[Transition]] = {}
        for t in s.transitions:
            before = earlier.setdefault(t.event, [])
            payload = thawed_json(t.payload)
            if any(thawed_json(e.payload) != payload and _may_share_actor(ctx, e, t) for e in before):
                yield ctx.problem(
                    (*t.path, "payload") if t.payload is not None else t.path,
                    "alternatives-differ",
                    f"this alternative of `{t.event}` in `{s.name}` declares another `payload` than an "
                    "earlier one: the payload is checked against the first alternative the actor may fire, "
                    "whichever alternative's guard then holds",
                    "give the alternatives of one event the same `payload` (an anchor `&name` and alias "
                    "`*name` repeat it)",
                    key=t.payload is not None,
                    severity="warning",
                )
            before.append(t)


def _timed_events(defn: Definition) -> dict[tuple[str, str], str]:
    """(state, event) pairs the system fires, with words naming what fires them."""
    fired = {(s.name, s.timeout.fire): "the timeout" for s in defn.states.values() if s.timeout is not None}
    edges = _edges(defn)
    for d in defn.deadlines:
        if d.start not in defn.states:
            continue
        span = _reachable(edges, [d.start], stop=d.until) - set(d.until)
        for e in d.escalate:
            for name in span:
                if e.action == "fire" and e.target in defn.states[name].events:
                    fired.setdefault((name, e.target), f"the escalation of deadline `{d.name}`")
    return fired


def check_timed_guards(ctx: _Context) -> Iterator[Problem]:
    for (state, event), by_what in sorted(_timed_events(ctx.defn).items()):
        alternatives = [t for t in ctx.defn.states[state].transitions if t.event == event]
        last = alternatives[-1] if alternatives else None
        if last is None or last.when is None or not all(t.when is not None for t in alternatives):
            continue  # an alternative without a guard always takes the system's event
        yield ctx.problem(
            last.when.path,
            "timed-event-guard",
            f"`{event}` in `{state}` is fired by {by_what}, but "
            + ("every alternative has" if len(alternatives) > 1 else "it has")
            + f" a `when`: if the guard refuses, the system's attempt is recorded and the case stays "
            f"in `{state}`",
            "add a last alternative without `when`, or drop the guard",
            key=True,
            severity="warning",
        )


def _events_between(defn: Definition, start: str, until: tuple[str, ...]) -> set[str]:
    between = _reachable(_edges(defn), [start], stop=until) - set(until)
    return {t.event for name in between for t in defn.states[name].transitions}


def check_events(ctx: _Context) -> Iterator[Problem]:
    defn = ctx.defn
    for s in defn.states.values():
        if s.timeout is not None and s.timeout.fire not in {t.event for t in s.transitions}:
            yield ctx.problem(
                (*s.timeout.path, "fire"),
                "unknown-event",
                f"the timeout fires `{s.timeout.fire}`, which `{s.name}` does not define in `on`",
                did_you_mean(s.timeout.fire, s.events) or f"add `{s.timeout.fire}` to the state's `on`",
            )
    if not _graph_complete(defn):
        return
    for d in defn.deadlines:
        if d.start not in defn.states:
            continue
        events = _events_between(defn, d.start, d.until)
        for e in d.escalate:
            if e.action == "fire" and e.target and e.target not in events:
                yield ctx.problem(
                    (*e.path, "fire"),
                    "unknown-event",
                    f"no state between `{d.start}` and the deadline's end defines `{e.target}`",
                    did_you_mean(e.target, events) or "fire an event those states define in `on`",
                )


# --- deadlines and durations ----------------------------------------------------------------------


def _durations(ctx: _Context) -> Iterator[tuple[Path, bool]]:
    """Every duration in the definition, and whether zero is allowed there."""
    for s in ctx.defn.states.values():
        if s.timeout is not None:
            yield (*s.timeout.path, "after"), False
    for d in ctx.defn.deadlines:
        yield (*d.path, "within"), False
        for e in d.escalate:
            if ctx.raw((*e.path, "after")) is not None:
                yield (*e.path, "after"), True  # the schema says 0s means "at once"


def check_durations(ctx: _Context) -> Iterator[Problem]:
    for path, zero_ok in _durations(ctx):
        text = ctx.raw(path)
        seconds = parse_duration(text) if isinstance(text, str) else None
        if seconds is None:
            message = f"`{text}` is not a duration"
        elif seconds == 0 and not zero_ok:
            message = f"`{text}` is no time at all"
        elif seconds > MAX_DURATION_SECONDS:
            message = f"`{text}` is longer than 100 years"
        else:
            continue
        yield ctx.problem(path, "bad-duration", message, DURATION_HINT)


def check_deadline_ends(ctx: _Context) -> Iterator[Problem]:
    defn = ctx.defn
    if not _graph_complete(defn):
        return
    edges = _edges(defn)
    for d in defn.deadlines:
        if d.start not in defn.states:
            continue
        after_start = _reachable(edges, edges[d.start])
        single = isinstance(ctx.raw((*d.path, "until")), str)
        for i, name in enumerate(d.until):
            if name in defn.states and name not in after_start:
                yield ctx.problem(
                    (*d.path, "until") if single else (*d.path, "until", i),
                    "deadline-never-ends",
                    f"`{name}` cannot be reached from `{d.start}`, "
                    f"so the deadline `{d.name}` never ends there",
                    severity="warning",
                )


def _names(names: Iterable[str]) -> str:
    return " or ".join(f"`{n}`" for n in names)


def check_deadline_closes(ctx: _Context) -> Iterator[Problem]:
    defn = ctx.defn
    if not _graph_complete(defn):
        return
    edges = _edges(defn)
    for d in defn.deadlines:
        if d.start not in defn.states:
            continue
        span = _reachable(edges, [d.start], stop=d.until)
        missed = [name for name in defn.final_states if name in span and name not in d.until]
        if missed:
            yield ctx.problem(
                (*d.path, "until"),
                "deadline-outlives-case",
                f"a case can close in {_names(missed)} after `{d.start}` without passing `until`: "
                f"the deadline `{d.name}` also ends when the case closes in {_names(missed)}",
                f"add {_names(missed)} to `until` to say so",
                key=True,
                severity="warning",
            )


def check_escalations(ctx: _Context) -> Iterator[Problem]:
    for d in ctx.defn.deadlines:
        for e in d.escalate:
            raw = ctx.raw(e.path) or {}
            actions = [a for a in ("notify", "reassign", "fire") if a in raw]
            if len(actions) != 1:
                yield ctx.problem(
                    e.path,
                    "bad-escalation",
                    "an escalation rung does exactly one of notify, reassign or fire"
                    + (f", this one names {', '.join(actions)}" if actions else ", this one names none"),
                    "split it into one rung per action",
                )


# --- data and payload fields ----------------------------------------------------------------------


def _properties(schema: Mapping[str, Any] | None) -> Collection[str] | None:
    props = schema.get("properties") if schema is not None else None
    return props if isinstance(props, Mapping) else None


def check_data_fields(ctx: _Context) -> Iterator[Problem]:
    fields = _properties(ctx.defn.data_schema)
    for s in ctx.defn.states.values():
        assign = s.assign
        from_data = assign is not None and assign.kind == "from_data"
        if fields is not None and assign is not None and from_data and assign.value not in fields:
            yield _unknown_data(ctx, assign.value, (*assign.path, "from_data"), fields, key=False)
        for t in s.transitions:
            yield from _transition_fields(ctx, t, fields)


def _unknown_data(ctx: _Context, name: str, path: Path, fields: Collection[str], *, key: bool) -> Problem:
    return ctx.problem(
        path,
        "unknown-data-field",
        f"the data schema declares no field `{name}`",
        did_you_mean(name, fields) or "declare it under `data: properties:`",
        key=key,
        severity="warning",
    )


def _transition_fields(ctx: _Context, t: Transition, fields: Collection[str] | None) -> Iterator[Problem]:
    if fields is not None:
        for name in (*t.set, *t.copy):
            if name not in fields:
                part = "set" if name in t.set else "copy"
                yield _unknown_data(ctx, name, (*t.path, part, name), fields, key=True)
    payload_fields = _properties(t.payload)
    if payload_fields is None:
        return
    for target, source in t.copy.items():
        if source not in payload_fields:
            yield ctx.problem(
                (*t.path, "copy", target),
                "unknown-payload-field",
                f"`{t.event}`'s payload declares no field `{source}`",
                did_you_mean(source, payload_fields)
                or "declare it under the transition's `payload: properties:`",
            )


# --- embedded JSON Schemas ------------------------------------------------------------------------

SCHEMA_KEYWORDS = frozenset(
    {
        # core
        "$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary", "$comment",
        "$defs",
        # applicators
        "prefixItems", "items", "contains", "additionalProperties", "properties", "patternProperties",
        "dependentSchemas", "propertyNames", "if", "then", "else", "allOf", "anyOf", "oneOf", "not",
        "unevaluatedItems", "unevaluatedProperties",
        # validation
        "type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
        "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains",
        "minContains", "maxProperties", "minProperties", "required", "dependentRequired",
        # annotations, format and content
        "title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples", "format",
        "contentEncoding", "contentMediaType", "contentSchema",
    }
)  # fmt: skip
"""The keywords of JSON Schema Draft 2020-12. A validator ignores any other key, so in a `data` or
`payload` schema one is most likely a typo (`requried`) or a text split by a comma."""
SUBSCHEMA_KEYWORDS = frozenset(
    {
        "items", "contains", "additionalProperties", "propertyNames", "if", "then", "else", "not",
        "unevaluatedItems", "unevaluatedProperties", "contentSchema",
    }
)  # fmt: skip
"""Keywords whose value is one schema."""
SUBSCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
"""Keywords whose value is a list of schemas."""
SUBSCHEMA_MAP_KEYWORDS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
"""Keywords whose value maps names to schemas."""
RENAMED_KEYWORDS: Mapping[str, str] = MappingProxyType(
    {"definitions": "$defs", "dependencies": "dependentRequired` or `dependentSchemas"}
)
"""Keywords of older drafts, and what Draft 2020-12 calls them."""
JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
JSON_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "array": "a list",
        "object": "a mapping (a schema)",
        "boolean": "true or false",
        "string": "a text",
        "integer": "a whole number",
        "number": "a number",
        "null": "empty",
    }
)
"""The meta-schema's types in a process owner's words."""
SCHEMA_HINT = "see the keyword in JSON Schema Draft 2020-12 (json-schema.org/understanding-json-schema)"


def _embedded_schemas(ctx: _Context) -> Iterator[tuple[Any, Path, str]]:
    """The JSON Schemas the definition carries, as plain data: `data` and each payload, with the path
    and the words naming it in a message."""
    if ctx.raw(("data",)) is not None:
        yield thawed_json(ctx.defn.data_schema), ("data",), "the `data` schema"
    for s in ctx.defn.states.values():
        for t in s.transitions:
            if t.payload is not None:
                yield thawed_json(t.payload), (*t.path, "payload"), f"the payload schema of `{t.event}`"


def check_schema_validity(ctx: _Context) -> Iterator[Problem]:
    meta = Draft202012Validator(
        Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for schema, root, what in _embedded_schemas(ctx):
        seen: set[Path] = set()
        for error in meta.iter_errors(schema):
            leaf = _deepest(error)
            path, key = _schema_error_place(leaf, root)
            if path in seen:
                continue  # $dynamicRef makes the meta-schema report some errors several times
            seen.add(path)
            message, hint = _schema_error_text(leaf)
            yield ctx.problem(path, "bad-data-schema", f"{what} is not valid: {message}", hint, key=key)


def _deepest(error: ValidationError) -> ValidationError:
    """Of an error and those of its alternatives (anyOf), the one deepest in the document: it names the
    part to change. On a tie an alternative wins, as it says more than "not valid under any"."""
    best = error
    for sub in error.context or ():
        candidate = _deepest(sub)
        deeper = len(candidate.absolute_path) > len(best.absolute_path)
        first_tie = best is error and len(candidate.absolute_path) == len(error.absolute_path)
        if deeper or first_tie:
            best = candidate
    return best


def _schema_error_place(error: ValidationError, root: Path) -> tuple[Path, bool]:
    path: Path = (*root, *error.absolute_path)
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        return (*path, error.instance), True  # a bad name (a patternProperties regex): point at the key
    return path, False


def _schema_error_text(error: ValidationError) -> tuple[str, str | None]:
    value = error.instance
    if error.validator == "enum" and error.validator_value == list(JSON_TYPES):
        hint = did_you_mean(str(value), JSON_TYPES) or f"the types are {', '.join(JSON_TYPES)}"
        return f"`{value}` is not a JSON Schema type", hint
    if error.validator == "format" and error.validator_value == "regex":
        return f"`{value}` is not a regular expression", "check the brackets and escape special characters"
    name = next((str(p) for p in reversed(error.absolute_path) if isinstance(p, str)), None)
    if error.validator != "type" or name is None:
        return (f"`{name}`: " if name else "") + error.message, SCHEMA_HINT
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    kinds = " or ".join(JSON_KINDS.get(str(k), str(k)) for k in expected)
    hint = SCHEMA_HINT
    if name == "items" and isinstance(value, list):
        hint = "Draft 2020-12 writes a list of schemas, one per position, as `prefixItems`"
    return f"`{name}` must be {kinds}, not {_json_kind(value)}", hint


def _json_kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text `{value}`"
    return "a list" if isinstance(value, list) else "a mapping"


def check_schema_keywords(ctx: _Context) -> Iterator[Problem]:
    for schema, root, what in _embedded_schemas(ctx):
        for path, value in _unknown_keywords(schema, root):
            word = str(path[-1])
            if value is None:
                hint = "its value is empty: an unquoted `, ` inside `{ }` splits a text; quote the text"
            elif word in RENAMED_KEYWORDS:
                hint = f"Draft 2020-12 calls it `{RENAMED_KEYWORDS[word]}`"
            else:
                hint = did_you_mean(word, SCHEMA_KEYWORDS) or "remove it, or keep the note in `description`"
            yield ctx.problem(
                path,
                "unknown-schema-keyword",
                f"`{word}` is not a JSON Schema keyword, so {what} ignores it",
                hint,
                key=True,
                severity="warning",
            )


def _unknown_keywords(schema: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    """(path, value) of every key of the schema and its subschemas that is not a keyword."""
    if not isinstance(schema, Mapping):
        return  # true/false schemas have no keys; a wrong kind of value is bad-data-schema
    for key, value in schema.items():
        here: Path = (*path, key)
        if key not in SCHEMA_KEYWORDS:
            yield here, value
        elif key in SUBSCHEMA_KEYWORDS:
            yield from _unknown_keywords(value, here)
        elif key in SUBSCHEMA_LIST_KEYWORDS and isinstance(value, list):
            for i, item in enumerate(value):
                yield from _unknown_keywords(item, (*here, i))
        elif key in SUBSCHEMA_MAP_KEYWORDS and isinstance(value, Mapping):
            for name, item in value.items():
                yield from _unknown_keywords(item, (*here, name))


# --- guards ---------------------------------------------------------------------------------------


def _guards(defn: Definition) -> Iterator[tuple[Expression, Mapping[str, Any] | None, bool]]:
    """Every guard, with the payload schema it may read and whether it routes a choice."""
    for s in defn.states.values():
        for t in s.transitions:
            if t.when is not None:
                yield t.when, t.payload, False
        for b in s.choice:
            if b.when is not None:
                yield b.when, None, True


def check_guards(ctx: _Context) -> Iterator[Problem]:
    data_schema = thawed_json(ctx.defn.data_schema)
    for expr, payload, in_choice in _guards(ctx.defn):
        try:
            guard = compile_guard(
                expr.text,
                data_schema=data_schema,
                payload_schema=thawed_json(payload) if payload is not None else None,
            )
        except ExpressionRejected as rejected:
            for issue in rejected.issues:
                yield ctx.problem(expr.path, issue.code, issue.message, issue.hint)
            continue
        if in_choice and any(chain[:1] == ("payload",) for chain in guard.chains):
            yield ctx.problem(
                expr.path,
                "payload-in-choice",
                "a choice branch reads `payload`, but a choice is resolved on entry, with no event "
                "and so no payload",
                "copy the field into the data with `copy:` on the event that leads here, then read `data.`",
            )


DEFINITION_CHECKS: tuple[Check, ...] = (
    check_unknown_states,
    check_reachability,
    check_finishing,
    check_final_exits,
    check_state_kinds,
    check_choice_mixed,
    check_choice_branches,
    check_roles,
    check_quorum,
    check_actors,
    check_owners,
    check_duplicate_events,
    check_events,
    check_durations,
    check_deadline_ends,
    check_deadline_closes,
    check_escalations,
    check_alternative_payloads,
    check_timed_guards,
    check_data_fields,
    check_schema_validity,
    check_schema_keywords,
    check_guards,
)


def check_definition(defn: Definition, doc: Document, org: Org | None) -> list[Problem]:
    """Every meaning problem of the definition (role checks only when an org is given), sorted."""
    ctx = _Context(defn, doc, org)
    return sort_problems(p for check in DEFINITION_CHECKS for p in check(ctx))


# --- the org --------------------------------------------------------------------------------------


def _org_unknown_roles(org: Org, doc: Document) -> Iterator[Problem]:
    for user in org.users.values():
        for i, held in enumerate(user.roles):
            if held not in org.roles:
                yield _problem(
                    doc,
                    (*user.path, "roles", i),
                    "unknown-role",
                    f"user `{user.id}` holds unknown role `{held}`",
                    did_you_mean(held, org.roles) or "define the role under `roles:`",
                )
    for role in org.roles.values():
        if role.manager is not None and role.manager not in org.roles:
            yield _problem(
                doc,
                (*role.path, "manager"),
                "unknown-role",
                f"role `{role.name}` is managed by unknown role `{role.manager}`",
                did_you_mean(role.manager, org.roles) or "define the role under `roles:`",
            )


def _org_unknown_departments(org: Org, doc: Document) -> Iterator[Problem]:
    if not isinstance(_raw(doc, ("departments",)), Mapping):
        return  # an org that lists no departments leaves department names free
    owners = [(r.department, r.path) for r in org.roles.values()] + [
        (u.department, u.path) for u in org.users.values()
    ]
    for name, path in owners:
        if name is not None and name not in org.departments:
            yield _problem(
                doc,
                (*path, "department"),
                "unknown-department",
                f"there is no department `{name}`",
                did_you_mean(name, org.departments) or "define it under `departments:`",
            )


def _org_administrator(org: Org, doc: Document) -> Iterator[Problem]:
    if not any(r.administrator for r in org.roles.values()):
        yield _problem(
            doc,
            ("roles",),
            "no-administrator",
            "no role is an administrator, so nobody can reassign stuck cases",
            "mark one role with `administrator: true`",
            key=True,
            severity="warning",
        )


def _calendar_faults(org: Org, doc: Document) -> Iterator[tuple[Path, str]]:
    cal = org.calendar
    try:
        zoneinfo.ZoneInfo(cal.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        yield ("calendar", "timezone"), f"`{cal.timezone}` is not a known time zone (e.g. Asia/Shanghai)"
    for i, (start, end) in enumerate(cal.working_hours):
        if not 0 <= start < end <= 24 * 60:
            text = _raw(doc, ("calendar", "working_hours", i))
            yield ("calendar", "working_hours", i), f"`{text}` is not a span within one day, start before end"
    for key in ("holidays", "extra_working_days"):
        for i, day in enumerate(getattr(cal, key)):
            try:
                datetime.date.fromisoformat(day)
            except ValueError:
                yield ("calendar", key, i), f"`{day}` is not a date"


def _org_calendar(org: Org, doc: Document) -> Iterator[Problem]:
    for path, message in _calendar_faults(org, doc):
        yield _problem(doc, path, "bad-calendar", message)


ORG_CHECKS: tuple[Callable[[Org, Document], Iterator[Problem]], ...] = (
    _org_unknown_roles,
    _org_unknown_departments,
    _org_administrator,
    _org_calendar,
)


def check_org(org: Org, doc: Document) -> list[Problem]:
    """Every meaning problem of the org, sorted."""
    return sort_problems(p for check in ORG_CHECKS for p in check(org, doc))
