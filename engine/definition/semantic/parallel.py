"""Checks of parallel states: each branch a small process that can finish, a join that can be met, and
deadlines on a branch that name one.

A branch's states live inside its parallel state, so the graph checks of the definition (unknown,
unreachable, cannot finish) are made again here on each branch, with their own codes so that a message
names the branch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import MappingProxyType

from sopflow.engine.definition.model import ASSIGNEE, EACH_ITEM, SYSTEM, USER_FORMAT, Parallel, ParallelBranch
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.definition.semantic.graph import reachable
from sopflow.engine.errors import Problem

CODES = (
    "bad-for-each",
    "unknown-branch-state",
    "branch-cannot-finish",
    "join-unreachable",
    "unknown-branch",
    "branch-escalation",
    "remaining-without-join",
    "remaining-with-item-deadline",
    "items-not-people",
)


def check_parallel(ctx: Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        parallel = s.parallel
        if parallel is None:
            continue
        for branch in parallel.branches.values():
            yield from _check_branch(ctx, branch)
        if parallel.template is not None:
            yield from _check_branch(ctx, parallel.template)
            yield from _check_items(ctx, s.name, parallel)
        every = (
            parallel.join == "all"
            or (parallel.join == "share" and parallel.share >= 1)
            or (parallel.join == "at_least" and 0 < len(parallel.branches) <= parallel.at_least)
        )
        if parallel.remaining == "finish" and every:
            yield ctx.problem(
                (*parallel.path, "remaining"),
                "remaining-without-join",
                f"`{s.name}` lets the branches still open finish after the join, but its join waits for "
                "every branch: none is ever left",
                "join on `first`, `{at_least: N}` or `{share: S}`, or drop `remaining`",
            )
        each = [d for d in ctx.defn.deadlines if d.start == s.name and d.branch == EACH_ITEM]
        if parallel.remaining == "finish" and each:
            yield ctx.problem(
                (*parallel.path, "remaining"),
                "remaining-with-item-deadline",
                f"`{s.name}` lets its items finish after the join, and deadline `{each[0].name}` times each "
                "item: an item's deadline would outlive the state it is kept for",
                "time the items with a deadline on the case, or let the join cancel them (drop `remaining`)",
            )
        if parallel.join == "share" and math.isnan(parallel.share):
            # The schema's bounds (above 0, at most 1) hold for NaN: no comparison with it is false.
            yield ctx.problem(
                (*parallel.path, "join", "share"),
                "join-unreachable",
                f"the join of `{s.name}` needs a share of `.nan` of its branches done, which is not a "
                "number: no count of branches done would meet it",
                "give a share above 0 and at most 1, e.g. `join: {share: 0.8}`",
            )
        # One task per item has no branches written: its items are counted when the state is entered.
        if (
            parallel.join == "at_least"
            and parallel.template is None
            and parallel.at_least > len(parallel.branches)
        ):
            yield ctx.problem(
                (*parallel.path, "join", "at_least"),
                "join-unreachable",
                f"the join of `{s.name}` needs {parallel.at_least} branches done, but it has "
                f"{len(parallel.branches)}",
                f"lower `at_least` to at most {len(parallel.branches)}, or write `join: all`",
            )
    for d in ctx.defn.deadlines:
        if d.branch is None:
            continue
        state = ctx.defn.states.get(d.start)
        names = list(state.parallel.branches) if state is not None and state.parallel is not None else []
        if state is not None and state.parallel is not None and state.parallel.template is not None:
            names = [EACH_ITEM]  # one task per item: each item's branch has the deadline of its own
        for e in d.escalate:
            if e.action != "notify":
                yield ctx.problem(
                    e.path,
                    "branch-escalation",
                    f"deadline `{d.name}` times branch `{d.branch}`, but its rung would {e.action} the whole "
                    "case",
                    "escalate a branch's deadline with `notify`; a rung that reassigns or fires belongs to a "
                    "deadline of the case",
                )
        items = names == [EACH_ITEM]
        if d.branch not in names:
            yield ctx.problem(
                (*d.path, "branch"),
                "unknown-branch",
                f"deadline `{d.name}` runs on branch `{d.branch}`, which `{d.start}` does not have",
                f"`{d.start}` runs one branch per item, named when a case runs: write `branch: {EACH_ITEM}` "
                "to give every item's branch a deadline of its own"
                if items
                else did_you_mean(d.branch, names)
                or (
                    f"the branches of `{d.start}`: {', '.join(names)}"
                    if names
                    else f"`{d.start}` is not a parallel state: start the deadline at one"
                ),
            )


def _check_branch(ctx: Context, branch: ParallelBranch) -> Iterator[Problem]:
    names = list(branch.states)
    refs = [(branch.initial, (*branch.path, "initial"))]
    refs += [(t.target, (*t.path, "to")) for st in branch.states.values() for t in st.transitions]
    known = True
    for target, path in refs:
        if target not in branch.states:
            known = False
            yield ctx.problem(
                path,
                "unknown-branch-state",
                f"branch `{branch.name}` has no state `{target}`",
                did_you_mean(target, names) or f"its states: {', '.join(names)}",
            )
    if not known:
        return
    edges = {name: [t.target for t in st.transitions] for name, st in branch.states.items()}
    for name in sorted(reachable(edges, [branch.initial])):
        if not reachable(edges, [name]) & set(branch.done_states):
            yield ctx.problem(
                branch.states[name].path,
                "branch-cannot-finish",
                f"branch `{branch.name}` in state `{name}` can never reach a final state: it is never done",
                "add a way out that leads to a branch state with `final: true`",
                key=True,
            )


def _check_items(ctx: Context, state: str, parallel: Parallel) -> Iterator[Problem]:
    """`for_each` names a list the data declares, and `collect` an object it declares."""
    properties = ctx.defn.data_schema.get("properties") or {}
    declared = properties.get(parallel.for_each or "")
    if not isinstance(declared, dict | MappingProxyType) or declared.get("type") != "array":
        yield ctx.problem(
            (*parallel.path, "for_each"),
            "bad-for-each",
            f"`{state}` runs one task per item of `{parallel.for_each}`, which the data does not declare "
            "as a list",
            f"declare `{parallel.for_each}: {{type: array, items: ...}}` under `data: properties:`",
        )
    if parallel.collect is not None:
        target = properties.get(parallel.collect)
        if not isinstance(target, dict | MappingProxyType) or target.get("type") != "object":
            yield ctx.problem(
                (*parallel.path, "collect"),
                "bad-for-each",
                f"`{state}` collects each item's results into `{parallel.collect}`, which the data does not "
                "declare as an object",
                f"declare `{parallel.collect}: {{type: object}}` under `data: properties:`",
            )
    yield from _check_people_items(ctx, state, parallel, declared)


def _check_people_items(ctx: Context, state: str, parallel: Parallel, declared: object) -> Iterator[Problem]:
    """A branch that only its item can move (its first state gives the work to nobody else and every event
    there is its assignee's) runs over people: its list should say so (`format: user`), so that an item
    that is no person is refused when the list is given, not left with a branch nobody can act on."""
    template = parallel.template
    if template is None or not isinstance(declared, dict | MappingProxyType):
        return
    first = template.states.get(template.initial)
    if first is None or first.assign is not None or not first.transitions:
        return
    if not all(t.by and set(t.by) <= {ASSIGNEE, SYSTEM} for t in first.transitions):
        return
    items = declared.get("items")
    if isinstance(items, dict | MappingProxyType) and items.get("format") == USER_FORMAT:
        return
    yield ctx.problem(
        (*parallel.path, "for_each"),
        "items-not-people",
        f"`{state}` gives each item of `{parallel.for_each}` its own branch, which only the item's person "
        f"can move (`{first.name}` is theirs: `by: [$assignee]`), but the items are not declared as people: "
        "an item that is no user of the org would leave a branch nobody can act on",
        f"declare the items of `{parallel.for_each}` as people, `items: {{type: string, format: user}}`, so "
        "that each item is checked as a person of the org when the list is given",
        severity="warning",
    )
