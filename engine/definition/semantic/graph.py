"""The shape of the state graph: states that are named but missing, unreachable or unable to finish,
final states with a way out, and how a state is one kind (final, choice, approval) and routes a choice.

The graph helpers here are shared with the deadline and timer checks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping

from sopflow.engine.definition.model import Definition, Path, State
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.errors import Problem

# --- graph helpers --------------------------------------------------------------------------------


def state_edges(defn: Definition) -> dict[str, tuple[str, ...]]:
    """Each state's ways out, leaving out those to states that do not exist."""
    return {name: tuple(t for t in s.targets() if t in defn.states) for name, s in defn.states.items()}


def reachable(
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


def graph_complete(defn: Definition) -> bool:
    """Whether every way out names a known state. When one does not, unknown-state says so, and the
    graph checks stay silent rather than report what follows from the typo."""
    return defn.initial in defn.states and all(
        t in defn.states for s in defn.states.values() for t in s.targets()
    )


def _reverse_edges(edges: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    back: dict[str, list[str]] = {name: [] for name in edges}
    for here, theres in edges.items():
        for there in theres:
            back[there].append(here)
    return back


# --- states and targets ---------------------------------------------------------------------------


def _state_refs(ctx: Context) -> Iterator[tuple[str, Path]]:
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
        if s.subprocess is not None:
            for outcome, target in s.subprocess.on.items():
                yield target, (*s.subprocess.path, "on", outcome)
    for d in defn.deadlines:
        yield d.start, (*d.path, "from")
        single = isinstance(ctx.raw((*d.path, "until")), str)
        for i, name in enumerate(d.until):
            yield name, (*d.path, "until") if single else (*d.path, "until", i)


def check_unknown_states(ctx: Context) -> Iterator[Problem]:
    for name, path in _state_refs(ctx):
        if name not in ctx.defn.states:
            yield ctx.problem(
                path, "unknown-state", f"there is no state `{name}`", did_you_mean(name, ctx.defn.states)
            )


def check_reachability(ctx: Context) -> Iterator[Problem]:
    defn = ctx.defn
    if not graph_complete(defn):
        return
    reached = reachable(state_edges(defn), [defn.initial])
    for name, s in defn.states.items():
        if name not in reached:
            yield ctx.problem(
                s.path,
                "unreachable-state",
                f"state `{name}` cannot be reached from the initial state `{defn.initial}`",
                "add a transition, choice branch or approval outcome that leads here, or remove the state",
                key=True,
            )


def check_finishing(ctx: Context) -> Iterator[Problem]:
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
    if not graph_complete(defn):
        return
    edges = state_edges(defn)
    can_finish = reachable(_reverse_edges(edges), finals)
    reached = reachable(edges, [defn.initial])
    for name, s in defn.states.items():
        if name in reached and name not in can_finish:
            yield ctx.problem(
                s.path,
                "cannot-finish",
                f"a case in state `{name}` can never reach a final state",
                "add a way out that leads (eventually) to a state with `final: true`",
                key=True,
            )


def _kinds(ctx: Context, s: State) -> list[str]:
    raw = ctx.raw(s.path) or {}
    kinds = ("final", "choice", "approval", "subprocess", "parallel", "automatic")
    return [k for k in kinds if k in raw and (k != "final" or raw[k] is True)]


def check_final_exits(ctx: Context) -> Iterator[Problem]:
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


def check_state_kinds(ctx: Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        kinds = _kinds(ctx, s)
        for extra in kinds[1:]:
            yield ctx.problem(
                (*s.path, extra),
                "state-kind-conflict",
                f"state `{s.name}` is both `{kinds[0]}` and `{extra}`; a state is at most one of final, "
                "choice, approval, subprocess, parallel or automatic",
                "split it into two states",
                key=True,
            )


def check_choice_mixed(ctx: Context) -> Iterator[Problem]:
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


def check_choice_branches(ctx: Context) -> Iterator[Problem]:
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
