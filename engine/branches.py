"""Parallel branches decided without I/O: a step of one branch of a parallel state, and the join.

A case in a parallel state stays in it (its `state` column, its records' from/to state) while its branches
run. Where each branch stands is not a column: every accepted record of the visit carries the positions of
all branches after it (`detail.branches`: branch → {state, assignee}), the record that entered the state
included, so that the runtime reads the last one, `audit verify` replays them like any other step detail
and a record changed afterwards no longer matches its replay. A branch's step is recorded as
`BRANCH.EVENT` on the case's own chain, so the one-writer-per-case rule (the version check) serialises the
branches: the step that completes the join is one step, taken once, that moves the case on to `then` and
cancels the branches still open, named in its record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sopflow.engine.compile import CompiledDefinition, GuardContext
from sopflow.engine.definition.model import (
    Definition,
    Parallel,
    ParallelBranch,
    State,
    Text,
    Transition,
    user_fields,
)
from sopflow.engine.errors import GuardRefused, InvalidData, NotAvailable, NotPermitted
from sopflow.engine.step import (
    Actor,
    People,
    Refused,
    Snapshot,
    Step,
    acting_role,
    case_view,
    check_people,
)
from sopflow.engine.step import _assignee as assignee_of
from sopflow.engine.step import _changed_data as changed_data
from sopflow.engine.step import _check_data as check_step_data
from sopflow.engine.step import _enter as enter
from sopflow.engine.step import _separation as separation

BRANCHES = "branches"
"""The record detail holding every branch's position after the step."""
SEPARATOR = "."
"""Between a branch's name and its event: `investigate.cause_found`."""


def entered(parallel: Parallel, data: Mapping[str, Any], people: People) -> dict[str, Any]:
    """The positions of the branches as the state is entered: each at its initial state, assigned."""
    return {
        name: {"state": b.initial, "assignee": assignee_of(b.states[b.initial], data, people)}
        for name, b in parallel.branches.items()
    }


def is_done(branch: ParallelBranch, position: Mapping[str, Any]) -> bool:
    return branch.states[str(position["state"])].final


def open_events(parallel: Parallel, positions: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(branch, event) of every event an open branch offers now, in the order written."""
    out: list[tuple[str, str]] = []
    for name, branch in parallel.branches.items():
        position = positions.get(name)
        if position is None or is_done(branch, position):
            continue
        out += [(name, e) for e in branch.states[str(position["state"])].events]
    return out


def resolve(state: State, positions: Mapping[str, Any], event: str) -> tuple[ParallelBranch, str]:
    """The branch an event addresses (`BRANCH.EVENT`, or a bare event only one open branch offers) and the
    bare event; NotAvailable naming what is there when none or several do."""
    parallel = state.parallel
    assert parallel is not None
    offered = open_events(parallel, positions)
    choices = ", ".join(f"{b}{SEPARATOR}{e}" for b, e in offered) or "none (every branch is done)"
    if SEPARATOR in event:
        name, bare = event.split(SEPARATOR, 1)
        branch = parallel.branches.get(name)
        if branch is None:
            raise NotAvailable(
                f"state `{state.name}` has no branch `{name}`",
                hint=f"its branches: {', '.join(parallel.branches)}",
            )
        if is_done(branch, positions[name]):
            raise NotAvailable(
                f"branch `{name}` of `{state.name}` is done: it takes no more events",
                hint=f"events here now: {choices}",
            )
        return branch, bare
    found = [b for b, e in offered if e == event]
    if len(found) == 1:
        return parallel.branches[found[0]], event
    if not found:
        raise NotAvailable(
            f"`{event}` is not an event of state `{state.name}` ({state.title}) or of its open branches",
            hint=f"events here now: {choices}",
        )
    raise NotAvailable(
        f"`{event}` is an event of several branches of `{state.name}`: {', '.join(found)}",
        hint=f"name the branch: `{found[0]}{SEPARATOR}{event}` (with the CLI: --branch {found[0]})",
    )


def branch_step(
    compiled: CompiledDefinition,
    state: State,
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    payload: Mapping[str, Any],
    people: People,
) -> Step:
    """Decide a step of one branch of the parallel `state`: who may act (the branch state's `by`, its
    assignee as `$assignee`), its guard, its data; then the join when the step completes its rule."""
    parallel = state.parallel
    assert parallel is not None
    positions = {k: dict(v) for k, v in snapshot.branches.items()}
    branch, bare = resolve(state, positions, event)
    here = branch.states[str(positions[branch.name]["state"])]
    qualified = f"{branch.name}{SEPARATOR}{bare}"
    alternatives = [t for t in here.transitions if t.event == bare]
    if not alternatives:
        raise NotAvailable(
            f"`{bare}` is not an event of branch `{branch.name}` in `{here.name}` ({here.title})",
            hint=f"events of the branch here: {', '.join(here.events) or 'none'}",
        )
    seen = replace(snapshot, assignee=positions[branch.name].get("assignee"))
    taken, role, detail, data = _decide(
        compiled, branch, here, alternatives, seen, actor, qualified, payload, people
    )
    if data != snapshot.data:
        check_step_data(compiled, snapshot, data, people)
    target = branch.states[taken.target]
    positions[branch.name] = {"state": target.name, "assignee": assignee_of(target, data, people)}
    detail["branch"] = branch.name
    done = [n for n, b in parallel.branches.items() if is_done(b, positions[n])]
    if len(done) >= parallel.needed():
        detail["join"] = {
            "rule": parallel.join,
            "needed": parallel.needed(),
            "done": done,
            "cancelled": [n for n in parallel.branches if n not in done],
        }
        return enter(compiled, snapshot, actor, qualified, parallel.then, data, role, people, detail)
    detail[BRANCHES] = positions
    return Step(
        event=qualified,
        from_state=state.name,
        to_state=state.name,
        role=role,
        on_behalf_of=actor.delegated.get(role) if role else None,
        data=data,
        data_change={
            k: [snapshot.data.get(k), data[k]]
            for k in sorted(data)
            if k not in snapshot.data or snapshot.data[k] != data[k]
        },
        entered=(),
        assignee=snapshot.assignee,
        detail=detail,
    )


def _decide(
    compiled: CompiledDefinition,
    branch: ParallelBranch,
    here: State,
    alternatives: list[Transition],
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    payload: Mapping[str, Any],
    people: People,
) -> tuple[Transition, str | None, dict[str, Any], dict[str, Any]]:
    """The alternative taken (the first the actor may fire whose guard holds), the acting role, the
    record's detail and the data after it; Refused as a state's transition is."""
    where = f"branch `{branch.name}` ({here.name})"
    roles = {t.path: acting_role(actor, t.by, snapshot) for t in alternatives}
    permitted = [t for t in alternatives if roles[t.path] is not None]
    if not permitted:
        needed = sorted({r for t in alternatives for r in t.by})
        raise Refused(
            NotPermitted(
                f"{actor.id} may not fire `{event}` in {where}: it needs {' or '.join(needed) or 'no one'}",
                hint=f"{actor.id} holds {', '.join(sorted(actor.roles)) or 'no role'}",
            ),
            None,
            {"needed": needed, "branch": branch.name},
        )
    refusals = {
        t.path: separation(actor, roles[t.path], t.not_by, snapshot, f"fire `{event}`") for t in permitted
    }
    cleared = [t for t in permitted if refusals[t.path] is None]
    if not cleared:
        refusal = refusals[permitted[0].path]
        assert refusal is not None
        raise refusal
    first = cleared[0]
    errors = compiled.payload_errors(first, payload)
    if errors:
        raise InvalidData(f"the payload of `{event}` is not valid: {errors[0]}", errors=errors)
    check_people(user_fields(first.payload), payload, people.org, "payload field")
    context = GuardContext(
        data=snapshot.data,
        payload=payload,
        actor=actor.guard_view(),
        permitted=frozenset(t.path for t in cleared),
        case=case_view(snapshot),
    )
    for t in cleared:
        if t.when is None or compiled.check(t.when, context):
            detail: dict[str, Any] = {"payload": dict(payload)} if payload else {}
            data = changed_data(compiled, snapshot.data, t.set, t.copy, t.compute, context, detail)
            return t, roles[t.path], detail, data
    guarded = next(t for t in cleared if t.when is not None)
    assert guarded.when is not None
    explain = str(guarded.explain) if guarded.explain else None
    raise Refused(
        GuardRefused(
            f"`{event}` is refused in {where}: "
            + (explain or f"the condition `{guarded.when.text}` does not hold"),
            hint=f"the condition is `{guarded.when.text}`",
        ),
        roles[guarded.path],
        {"guard": guarded.when.text, "branch": branch.name},
    )


def transitions_of(state: State, positions: Mapping[str, Any], event: str) -> list[Transition]:
    """The transitions a `BRANCH.EVENT` names where its branch stands now ([] when none)."""
    parallel = state.parallel
    name, _, bare = event.partition(SEPARATOR)
    branch = parallel.branches.get(name) if parallel is not None else None
    if branch is None or name not in positions:
        return []
    return [t for t in branch.states[str(positions[name]["state"])].transitions if t.event == bare]


def roles_acting(state: State) -> set[str]:
    """Every role that fires an event of a branch of the parallel `state`."""
    parallel = state.parallel
    if parallel is None:
        return set()
    return {
        r for b in parallel.branches.values() for s in b.states.values() for t in s.transitions for r in t.by
    }


def ended_deadlines(definition: Definition, step: Step) -> tuple[str, ...]:
    """The deadlines on branches that `step` ends: its branch's when the branch is done, and every branch
    deadline of the parallel state when the step joins it."""
    name = step.detail.get("branch")
    state = definition.states.get(step.from_state)
    if not isinstance(name, str) or state is None or state.parallel is None:
        return ()
    joined = "join" in step.detail
    position = step.detail.get(BRANCHES, {}).get(name, {})
    done = joined or state.parallel.branches[name].states[position.get("state", "")].final
    return tuple(
        d.name
        for d in definition.deadlines
        if d.branch is not None and d.start == state.name and (joined or (done and d.branch == name))
    )


@dataclass(frozen=True, slots=True)
class BranchStatus:
    """Where one branch of a case's parallel state stands, for `show`."""

    name: str
    title: Text
    state: str
    state_title: Text
    owner: str | None
    assignee: str | None
    done: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "branch": self.name,
            "state": self.state,
            "owner": self.owner,
            "assignee": self.assignee,
            "done": self.done,
        }


def status(parallel: Parallel, positions: Mapping[str, Any]) -> list[BranchStatus]:
    """Each branch of `parallel` where `positions` put it, in the order written."""
    out = []
    for name, branch in parallel.branches.items():
        position = positions.get(name)
        if position is None:
            continue
        here = branch.states[str(position["state"])]
        assignee = position.get("assignee")
        out.append(
            BranchStatus(
                name,
                branch.title,
                here.name,
                here.title,
                here.owner,
                assignee if isinstance(assignee, str) else None,
                here.final,
            )
        )
    return out
