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

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sopflow.engine.compile import CompiledDefinition, GuardContext
from sopflow.engine.definition.model import (
    APPROVE,
    EACH_ITEM,
    REJECT,
    RESUME,
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
    CLAIM,
    START_WORK,
    Actor,
    People,
    Refused,
    Snapshot,
    Step,
    acting_role,
    case_view,
    check_people,
    staying,
)
from sopflow.engine.step import _assignee as assignee_of
from sopflow.engine.step import _changed_data as changed_data
from sopflow.engine.step import _check_data as check_step_data
from sopflow.engine.step import _enter as enter
from sopflow.engine.step import _separation as separation
from sopflow.engine.store.records import BranchItems, TimerSpec
from sopflow.engine.timers import ITEM_SEPARATOR

MAX_TIMER_NAME = 64
"""The longest timer name the store keeps (`timers.name`)."""
_NAME = re.compile(r"[A-Za-z0-9_@-]+(?:\.[A-Za-z0-9_@-]+)*")
"""An item that names its branch as it is (a user id such as `li.lei`); another is named `itemN`."""
BRANCHES = "branches"
"""The record detail holding every branch's position after the step."""
SEPARATOR = "."
"""Between a branch's name and its event: `investigate.cause_found`."""
_BUILT_IN = frozenset({CLAIM, START_WORK, APPROVE, REJECT, RESUME})
"""Events of a case's own state that a bare event never means for a branch left running."""


WIP = "branch_wip"
"""The record detail holding what each person held when the step gave branches to the least loaded: the
counts the picks were decided with (`audit verify` decides them again from it)."""


class _Picker:
    """Gives the branches of one step their people: `least_loaded` to the member of the role holding the
    fewest open cases and branch work items (counting those given in the same step, so that the items of
    one entry are spread), passing by those at the role's `wip_limit` unless every one is."""

    def __init__(self, people: People, detail: dict[str, Any] | None) -> None:
        self.people = people
        self.detail = detail
        self.held: dict[str, int] = {}
        self.given: dict[str, int] = {}

    def assignee(self, state: State, data: Mapping[str, Any]) -> str | None:
        if state.assign is None or state.assign.kind != "least_loaded":
            return assignee_of(state, data, self.people)
        role = state.assign.value
        members = list(self.people.members(role))
        if not members:
            return None
        count = self.people.open_cases
        for m in members:
            if m not in self.held:
                self.held[m] = count(m) if count is not None else 0
        load = {m: self.held[m] + self.given.get(m, 0) for m in members}
        limit = self.people.org.roles[role].wip_limit if role in self.people.org.roles else None
        free = [m for m in members if limit is None or load[m] < limit]
        chosen = min(free or members, key=lambda m: load[m])
        self.given[chosen] = self.given.get(chosen, 0) + 1
        if self.detail is not None:
            wip = self.detail.setdefault(WIP, {"held": {}})
            wip["held"] = dict(self.held)
            if limit is not None:
                wip.setdefault("limit", {})[role] = limit
            if not free:
                wip.setdefault("over_limit", []).append(chosen)
        return chosen


def entered(
    parallel: Parallel, data: Mapping[str, Any], people: People, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The positions of the branches as the state is entered: each at its initial state, assigned (the
    counts of least-loaded picks written into `detail`)."""
    picker = _Picker(people, detail)
    if parallel.template is not None:
        return _items_entered(parallel, parallel.template, data, picker)
    return {
        name: {"state": b.initial, "assignee": picker.assignee(b.states[b.initial], data)}
        for name, b in parallel.branches.items()
    }


def _items_entered(
    parallel: Parallel, template: ParallelBranch, data: Mapping[str, Any], picker: _Picker
) -> dict[str, Any]:
    """One branch per element of the `for_each` list, named by it; a person's branch is theirs."""
    items = data.get(parallel.for_each or "")
    if not isinstance(items, list | tuple) or not items:
        raise InvalidData(
            f"`{parallel.for_each}` must hold a list of at least one item to run one task per item",
            hint=f"give `{parallel.for_each}` in the data before the case enters the state",
        )
    if parallel.join == "at_least" and len(items) < parallel.at_least:
        # The join would wait for more branches than there are: the case could never move on.
        raise InvalidData(
            f"`{parallel.for_each}` holds {len(items)} item(s), but the join needs {parallel.at_least} done",
            hint=f"give `{parallel.for_each}` at least {parallel.at_least} items",
        )
    first = template.states[template.initial]
    out: dict[str, Any] = {}
    for i, item in enumerate(items, 1):
        name = str(item) if isinstance(item, str | int) and _NAME.fullmatch(str(item)) else f"item{i}"
        if name in out:
            raise InvalidData(
                f"`{parallel.for_each}` holds `{name}` twice: one task per item needs each once"
            )
        assignee = picker.assignee(first, data)
        offered = first.assign is not None and first.assign.kind == "claim"
        if assignee is None and not offered and isinstance(item, str) and item in picker.people.org.users:
            assignee = item
        out[name] = {"state": template.initial, "assignee": assignee}
    return out


def branch_named(parallel: Parallel, name: str) -> ParallelBranch | None:
    """The branch spec of the branch called `name` (the template's, for one task per item)."""
    return parallel.template if parallel.template is not None else parallel.branches.get(name)


def names(parallel: Parallel, positions: Mapping[str, Any]) -> list[str]:
    """The branches of the state, in order: as written, or one per item as entered."""
    # Sorted: stored positions come back as canonical JSON (keys in order), whatever order they were made in.
    return sorted(positions) if parallel.template is not None else list(parallel.branches)


def is_done(branch: ParallelBranch, position: Mapping[str, Any]) -> bool:
    return branch.states[str(position["state"])].final


def open_events(parallel: Parallel, positions: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(branch, event) of every event an open branch offers now, in the order written."""
    out: list[tuple[str, str]] = []
    for name in names(parallel, positions):
        branch = branch_named(parallel, name)
        position = positions.get(name)
        if branch is None or position is None or is_done(branch, position):
            continue
        here = branch.states[str(position["state"])]
        if _offered(here, position):
            out.append((name, CLAIM))
        out += [(name, e) for e in here.events if e != CLAIM]
    return out


def _offered(state: State, position: Mapping[str, Any]) -> bool:
    """A branch state that members of a role claim, which nobody has claimed yet."""
    return state.assign is not None and state.assign.kind == "claim" and position.get("assignee") is None


def resolve(
    state: State, positions: Mapping[str, Any], event: str, actor: str | None = None
) -> tuple[str, ParallelBranch, str]:
    """The branch an event addresses (`BRANCH.EVENT`, or a bare event only one open branch offers, or
    only one assigned to `actor`), its spec and the bare event; NotAvailable naming what is there when
    none or several do."""
    parallel = state.parallel
    assert parallel is not None
    offered = open_events(parallel, positions)
    choices = ", ".join(f"{b}{SEPARATOR}{e}" for b, e in offered) or "none (every branch is done)"
    if SEPARATOR in event:
        # A branch named by a person's id has dots of its own: the event is what follows the last one.
        name, _, bare = event.rpartition(SEPARATOR)
        branch = branch_named(parallel, name) if name in names(parallel, positions) else None
        if branch is None:
            raise NotAvailable(
                f"state `{state.name}` has no branch `{name}`",
                hint=f"its branches: {', '.join(names(parallel, positions))}",
            )
        if is_done(branch, positions[name]):
            raise NotAvailable(
                f"branch `{name}` of `{state.name}` is done: it takes no more events",
                hint=f"events here now: {choices}",
            )
        return name, branch, bare
    found = [b for b, e in offered if e == event]
    if len(found) > 1 and actor is not None:
        # One task per item: each person's own branch is theirs to act on without naming it.
        theirs = [b for b in found if positions[b].get("assignee") == actor]
        found = theirs if len(theirs) == 1 else found
    if len(found) == 1:
        branch = branch_named(parallel, found[0])
        assert branch is not None
        return found[0], branch, event
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
    _, qualified, role, detail, data = _advance(
        compiled, state, positions, snapshot, actor, event, payload, people
    )
    every = names(parallel, positions)
    done = [n for n in every if is_done(_spec(parallel, n), positions[n])]
    needed = parallel.needed(len(every))
    if "claimed_by" not in detail and len(done) >= needed:
        finish = parallel.remaining == "finish"
        still = [n for n in every if n not in done]
        detail["join"] = {
            "rule": parallel.join,
            "needed": needed,
            "done": done,
            "cancelled": [] if finish else still,
            **({"remaining": still} if finish else {}),
        }
        if finish and still:
            # The discriminator: the case moves on, the branches still open run to their end.
            detail[LINGERING] = {"state": state.name, "branches": positions}
        return enter(compiled, snapshot, actor, qualified, parallel.then, data, role, people, detail)
    detail[BRANCHES] = positions
    return staying(qualified, snapshot, actor, role, data, detail)


LINGERING = "lingering"
"""The record detail holding branches that run on after their join (`remaining: finish`)."""


def lingering_step(
    compiled: CompiledDefinition,
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    payload: Mapping[str, Any],
    people: People,
) -> Step | None:
    """A step of a branch its join left running (`remaining: finish`), taken wherever the case now
    stands: decided as in its parallel state, recorded as a step that stays; None when `event` addresses
    no branch still open."""
    state = compiled.definition.states.get(str(snapshot.lingering.get("state")))
    positions = {k: dict(v) for k, v in dict(snapshot.lingering.get("branches") or {}).items()}
    if state is None or state.parallel is None:
        return None
    offered = open_events(state.parallel, positions)
    if SEPARATOR not in event and (event in _BUILT_IN or event not in {e for _b, e in offered}):
        return None
    if SEPARATOR in event and event.rpartition(SEPARATOR)[0] not in positions:
        return None
    _, qualified, role, detail, data = _advance(
        compiled, state, positions, snapshot, actor, event, payload, people
    )
    detail[LINGERING] = {"state": state.name, "branches": positions}
    return staying(qualified, snapshot, actor, role, data, detail)


def _spec(parallel: Parallel, name: str) -> ParallelBranch:
    spec = branch_named(parallel, name)
    assert spec is not None
    return spec


def _advance(
    compiled: CompiledDefinition,
    state: State,
    positions: dict[str, Any],
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    payload: Mapping[str, Any],
    people: People,
) -> tuple[str, str, str | None, dict[str, Any], dict[str, Any]]:
    """Decide the step of the branch of the parallel `state` that `event` addresses, moving it in
    `positions`: (branch, `BRANCH.EVENT`, acting role, the record's detail, the data after it)."""
    parallel = state.parallel
    assert parallel is not None
    name, branch, bare = resolve(state, positions, event, actor.id)
    here = branch.states[str(positions[name]["state"])]
    qualified = f"{name}{SEPARATOR}{bare}"
    if bare == CLAIM and here.assign is not None and here.assign.kind == "claim":
        role, detail = _claim(here, name, positions, actor, people)
        return name, qualified, role, detail, dict(snapshot.data)
    alternatives = [t for t in here.transitions if t.event == bare]
    if not alternatives:
        raise NotAvailable(
            f"`{bare}` is not an event of branch `{name}` in `{here.name}` ({here.title})",
            hint=f"events of the branch here: {', '.join(here.events) or 'none'}",
        )
    seen = replace(snapshot, assignee=positions[name].get("assignee"))
    taken, acting, detail, data = _decide(
        compiled, name, here, alternatives, seen, actor, qualified, payload, people, parallel.collect
    )
    if data != snapshot.data:
        check_step_data(compiled, snapshot, data, people)
    target = branch.states[taken.target]
    # A branch keeps its person (an item's, or the one its data named) into a state that assigns no one.
    picked = _Picker(people, detail).assignee(target, data) if target.assign else None
    assignee = picked if target.assign else positions[name].get("assignee")
    positions[name] = {"state": target.name, "assignee": assignee}
    detail["branch"] = name
    return name, qualified, acting, detail, data


def _claim(
    here: State, name: str, positions: dict[str, Any], actor: Actor, people: People
) -> tuple[str, dict[str, Any]]:
    """A member of the role takes the work of branch `name`, as a claim of a case's state is taken: not
    twice, and not by someone holding their role's `wip_limit` (what they held is recorded)."""
    assert here.assign is not None
    role = here.assign.value
    where = f"branch `{name}` ({here.name})"
    if role not in actor.roles:
        raise Refused(
            NotPermitted(f"{actor.id} may not claim {where}: it needs the role {role}"),
            None,
            {"needed": [role], "branch": name},
        )
    holder = positions[name].get("assignee")
    if holder is not None:
        raise Refused(
            NotPermitted(f"{where} is already claimed by {holder}", hint="ask the role's manager"),
            role,
            {"assignee": holder, "branch": name},
        )
    detail: dict[str, Any] = {"claimed_by": actor.id, "branch": name}
    limit = people.org.roles[role].wip_limit if role in people.org.roles else None
    if limit is not None and people.open_cases is not None:
        held = people.open_cases(actor.id)
        if held >= limit:
            raise Refused(
                NotPermitted(
                    f"{actor.id} holds {held} open case(s) and branch work item(s), the most a {role} may "
                    f"hold at once (wip_limit {limit})",
                    hint="finish one, or hand one on, before claiming another",
                ),
                role,
                {"rule": "wip-limit", "held": held, "limit": limit, "branch": name},
            )
        detail["held"] = held
    positions[name] = {**positions[name], "assignee": actor.id}
    return role, detail


def _decide(
    compiled: CompiledDefinition,
    name: str,
    here: State,
    alternatives: list[Transition],
    snapshot: Snapshot,
    actor: Actor,
    event: str,
    payload: Mapping[str, Any],
    people: People,
    collect: str | None = None,
) -> tuple[Transition, str | None, dict[str, Any], dict[str, Any]]:
    """The alternative taken (the first the actor may fire whose guard holds), the acting role, the
    record's detail and the data after it (with `collect`, what the step sets goes under the branch's
    name in that field); Refused as a state's transition is."""
    where = f"branch `{name}` ({here.name})"
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
            {"needed": needed, "branch": name},
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
            if collect is None:
                data = changed_data(compiled, snapshot.data, t.set, t.copy, t.compute, context, detail)
                return t, roles[t.path], detail, data
            fields = changed_data(compiled, {}, t.set, t.copy, t.compute, context, detail)
            data = dict(snapshot.data)
            bucket = dict(data.get(collect) or {})
            bucket[name] = {**dict(bucket.get(name) or {}), **fields}
            data[collect] = bucket
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
        {"guard": guarded.when.text, "branch": name},
    )


def transitions_of(state: State, positions: Mapping[str, Any], event: str) -> list[Transition]:
    """The transitions a `BRANCH.EVENT` names where its branch stands now ([] when none)."""
    parallel = state.parallel
    name, _, bare = event.rpartition(SEPARATOR)
    branch = branch_named(parallel, name) if parallel is not None else None
    if branch is None or name not in positions:
        return []
    return [t for t in branch.states[str(positions[name]["state"])].transitions if t.event == bare]


def roles_acting(state: State) -> set[str]:
    """Every role that fires an event of a branch of the parallel `state`, and every branch state's owner
    (whose members a branch assigned to one of them finds among their tasks)."""
    parallel = state.parallel
    if parallel is None:
        return set()
    specs = (*parallel.branches.values(), *((parallel.template,) if parallel.template else ()))
    found = {r for b in specs for s in b.states.values() for t in s.transitions for r in t.by}
    return found | {s.owner for b in specs for s in b.states.values() if s.owner}


def held_items(definition: Definition, step: Step) -> BranchItems | None:
    """Who holds the open branches after `step` (branch → assignee, None: nobody now), for a person's
    load: every branch when the step enters a parallel state (and none when it leaves one), only its own
    branch for a branch's step; None when it changes no branch."""
    here = definition.states.get(step.to_state)
    positions = step.detail.get(BRANCHES)
    lingering = step.detail.get(LINGERING)
    after_join = isinstance(lingering, dict) and isinstance(lingering.get("branches"), dict)
    if after_join and not isinstance(positions, dict):
        # Branches a join left running: the join gives every one, a step of one of them its own.
        assert isinstance(lingering, dict)
        here, positions = definition.states.get(str(lingering.get("state"))), lingering["branches"]
    if here is not None and here.parallel is not None and isinstance(positions, dict):
        name = step.detail.get("branch")
        every = step.moved or not isinstance(name, str) or name not in positions
        out: dict[str, str | None] = {}
        for branch in list(positions) if every else [str(name)]:
            spec = branch_named(here.parallel, branch)
            position = positions[branch]
            assignee = position.get("assignee")
            held = spec is not None and isinstance(assignee, str) and not is_done(spec, position)
            out[branch] = assignee if held else None
        return BranchItems(out, every, after_join and BRANCHES not in step.detail)
    left = definition.states.get(step.from_state)
    return BranchItems({}, True) if left is not None and left.parallel is not None and step.moved else None


def ended_deadlines(
    definition: Definition, step: Step, before: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The deadlines on branches that `step` ends: its branch's when the branch is done, and every branch
    deadline of the parallel state when the step joins it; a per-item deadline's (`branch: each`) of the
    item's branch when it is done, and of every item when the step joins or leaves the state (`before`:
    where the branches stood before the step, for a step of the state's own that leaves it). A branch the
    join left running (`remaining: finish`) keeps its deadline until it is done."""
    name = step.detail.get("branch")
    lingering = step.detail.get(LINGERING)
    if isinstance(lingering, dict) and "join" not in step.detail and isinstance(name, str):
        there = definition.states.get(str(lingering.get("state")))
        parallel = there.parallel if there is not None else None
        spec = branch_named(parallel, name) if parallel is not None else None
        position = dict(lingering.get("branches") or {}).get(name, {})
        if there is None or spec is None or not spec.states[position.get("state", "")].final:
            return ()
        return tuple(d.name for d in definition.deadlines if d.start == there.name and d.branch == name)
    state = definition.states.get(step.from_state)
    if state is None or state.parallel is None:
        return ()
    joined = "join" in step.detail
    left = step.detail.get("join", {}).get("remaining", ()) if joined else ()
    position = step.detail.get(BRANCHES, {}).get(name, {})
    spec = branch_named(state.parallel, name) if isinstance(name, str) else None
    done = joined or (spec is not None and spec.states[position.get("state", "")].final)
    fixed = tuple(
        d.name
        for d in definition.deadlines
        if isinstance(name, str)
        and d.branch not in (None, EACH_ITEM)
        and d.start == state.name
        and ((joined and d.branch not in left) or (done and d.branch == name))
    )
    each = [d.name for d in definition.deadlines if d.branch == EACH_ITEM and d.start == state.name]
    if not each or state.parallel.template is None:
        return fixed
    join = step.detail.get("join")
    if isinstance(join, dict):
        every = sorted([*join.get("done", ()), *join.get("cancelled", ())])
        items = every
    elif step.moved:
        every = items = sorted(before or {})
    elif isinstance(name, str) and done:
        every, items = sorted(step.detail.get(BRANCHES, {})), [name]
    else:
        return fixed
    return (*fixed, *(item_timer(d, item, every) for d in each for item in items))


def needs_before(definition: Definition, step: Step) -> bool:
    """Whether `ended_deadlines` needs where the branches stood before `step`: a step of a one-task-per-
    item state's own that leaves it, ending its per-item deadlines."""
    state = definition.states.get(step.from_state)
    return (
        step.moved
        and "join" not in step.detail
        and state is not None
        and state.parallel is not None
        and any(d.branch == EACH_ITEM and d.start == state.name for d in definition.deadlines)
    )


def item_timer(deadline: str, branch: str, every: Sequence[str]) -> str:
    """The timer name of deadline `deadline` on the branch of one item (`visit-in-1d@north`); by its place
    among the sorted branches (`visit-in-1d@#3`) when the item's name would make it too long to store."""
    name = f"{deadline}{ITEM_SEPARATOR}{branch}"
    if len(name) <= MAX_TIMER_NAME:
        return name
    return f"{deadline}{ITEM_SEPARATOR}#{list(every).index(branch) + 1}"


def item_deadlines(definition: Definition, step: Step, specs: Sequence[TimerSpec]) -> tuple[TimerSpec, ...]:
    """`specs` with each per-item deadline (`branch: each`) a step starts by entering a one-task-per-item
    state made one timer per item's branch, each due on its own."""
    here = definition.states.get(step.to_state)
    positions = step.detail.get(BRANCHES)
    items = here is not None and here.parallel is not None and here.parallel.template is not None
    if not items or here is None or not isinstance(positions, dict):
        return tuple(specs)
    each = {d.name for d in definition.deadlines if d.branch == EACH_ITEM and d.start == here.name}
    every = sorted(positions)
    out: list[TimerSpec] = []
    for spec in specs:
        if spec.kind == "deadline" and spec.name in each:
            out += [replace(spec, name=item_timer(spec.name, b, every)) for b in every]
        else:
            out.append(spec)
    return tuple(out)


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
    after_join: bool = False
    """A branch its join left running (`remaining: finish`) while the case went on."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "branch": self.name,
            "state": self.state,
            "owner": self.owner,
            "assignee": self.assignee,
            "done": self.done,
            "after_join": self.after_join,
        }


def status(parallel: Parallel, positions: Mapping[str, Any]) -> list[BranchStatus]:
    """Each branch of `parallel` where `positions` put it, in the order written."""
    out = []
    for name in names(parallel, positions):
        branch = branch_named(parallel, name)
        position = positions.get(name)
        if position is None or branch is None:
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


def lingering_status(definition: Definition, lingering: Mapping[str, Any]) -> list[BranchStatus]:
    """The branches a join left running (`remaining: finish`) that are not done yet, for `show`."""
    state = definition.states.get(str(lingering.get("state")))
    if state is None or state.parallel is None:
        return []
    found = status(state.parallel, dict(lingering.get("branches") or {}))
    return [replace(b, after_join=True) for b in found if not b.done]
