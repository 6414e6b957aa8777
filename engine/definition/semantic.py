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
from typing import Any

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


def _distinct_people(org: Org, roles: tuple[str, ...]) -> int:
    """How many roles can be filled by different people at once (a bipartite matching)."""
    holder: dict[str, str] = {}

    def assign(role: str, tried: set[str]) -> bool:
        for person in org.members(role):
            if person in tried:
                continue
            tried.add(person)
            if person not in holder or assign(holder[person], tried):
                holder[person] = role
                return True
        return False

    return sum(1 for role in roles if assign(role, set()))


def check_quorum(ctx: _Context) -> Iterator[Problem]:
    org = ctx.org
    if org is None:
        return
    for s in ctx.defn.states.values():
        a = s.approval
        if a is None or any(r not in org.roles for r in a.roles):
            continue  # an unknown role is reported as unknown-role
        if a.rule == "quorum" and a.at_least > len(org.members(a.roles[0])):
            yield ctx.problem(
                (*a.path, "quorum", "at_least"),
                "bad-quorum",
                f"the quorum needs {a.at_least} members of `{a.roles[0]}`, but the org has "
                f"{len(org.members(a.roles[0]))}",
                "lower at_least, or add members to the role in the org",
            )
        elif a.rule == "all_of" and _distinct_people(org, a.roles) < len(a.roles):
            yield ctx.problem(
                (*a.path, "all_of"),
                "bad-quorum",
                f"all_of needs {len(a.roles)} different people, one per role, but the org's members of "
                "those roles cannot fill them all",
                "add members to the roles in the org",
                key=True,
            )
        elif a.rule == "any_of" and not any(org.members(r) for r in a.roles):
            yield ctx.problem(
                (*a.path, "any_of"),
                "bad-quorum",
                "nobody in the org holds any of these roles",
                "add members to the roles in the org",
                key=True,
            )


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


# --- guards ---------------------------------------------------------------------------------------


def _guards(defn: Definition) -> Iterator[tuple[Expression, Mapping[str, Any] | None]]:
    for s in defn.states.values():
        for t in s.transitions:
            if t.when is not None:
                yield t.when, t.payload
        for b in s.choice:
            if b.when is not None:
                yield b.when, None


def check_guards(ctx: _Context) -> Iterator[Problem]:
    data_schema = thawed_json(ctx.defn.data_schema)
    for expr, payload in _guards(ctx.defn):
        try:
            compile_guard(
                expr.text,
                data_schema=data_schema,
                payload_schema=thawed_json(payload) if payload is not None else None,
            )
        except ExpressionRejected as rejected:
            for issue in rejected.issues:
                yield ctx.problem(expr.path, issue.code, issue.message, issue.hint)


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
    check_escalations,
    check_data_fields,
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
