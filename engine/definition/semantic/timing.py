"""Time: durations, the events timeouts and escalations fire (and guards that may refuse them), and
deadlines that never end, outlive the case, or escalate in more than one way at once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sopflow.engine.definition.build import parse_duration
from sopflow.engine.definition.model import Definition, Path
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.definition.semantic.graph import graph_complete, reachable, state_edges
from sopflow.engine.errors import Problem

DURATION_HINT = "write durations like 4h, 30m, 1h30m, 2d"
MAX_DURATION_SECONDS = 100 * 365 * 86400
"""Longer than any real process step, and far below what datetime arithmetic can hold."""


# --- events the system fires ----------------------------------------------------------------------


def _timed_events(defn: Definition) -> dict[tuple[str, str], str]:
    """(state, event) pairs the system fires, with words naming what fires them."""
    fired = {(s.name, s.timeout.fire): "the timeout" for s in defn.states.values() if s.timeout is not None}
    edges = state_edges(defn)
    for d in defn.deadlines:
        if d.start not in defn.states:
            continue
        span = reachable(edges, [d.start], stop=d.until) - set(d.until)
        for e in d.escalate:
            for name in span:
                if e.action == "fire" and e.target in defn.states[name].events:
                    fired.setdefault((name, e.target), f"the escalation of deadline `{d.name}`")
    return fired


def check_timed_guards(ctx: Context) -> Iterator[Problem]:
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
    between = reachable(state_edges(defn), [start], stop=until) - set(until)
    return {t.event for name in between for t in defn.states[name].transitions}


def check_events(ctx: Context) -> Iterator[Problem]:
    defn = ctx.defn
    for s in defn.states.values():
        if s.timeout is not None and s.timeout.fire not in {t.event for t in s.transitions}:
            yield ctx.problem(
                (*s.timeout.path, "fire"),
                "unknown-event",
                f"the timeout fires `{s.timeout.fire}`, which `{s.name}` does not define in `on`",
                did_you_mean(s.timeout.fire, s.events) or f"add `{s.timeout.fire}` to the state's `on`",
            )
    if not graph_complete(defn):
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


def _durations(ctx: Context) -> Iterator[tuple[Path, bool]]:
    """Every duration in the definition, and whether zero is allowed there."""
    for s in ctx.defn.states.values():
        # An automatic state's own timer (due at once) is not written: only a written timeout is read.
        if s.timeout is not None and s.timeout.path[-1] == "timeout":
            yield (*s.timeout.path, "after"), False
    for d in ctx.defn.deadlines:
        yield (*d.path, "within"), False
        for e in d.escalate:
            if ctx.raw((*e.path, "after")) is not None:
                yield (*e.path, "after"), True  # the schema says 0s means "at once"


def check_durations(ctx: Context) -> Iterator[Problem]:
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


def check_deadline_ends(ctx: Context) -> Iterator[Problem]:
    defn = ctx.defn
    if not graph_complete(defn):
        return
    edges = state_edges(defn)
    for d in defn.deadlines:
        if d.start not in defn.states:
            continue
        after_start = reachable(edges, edges[d.start])
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


def check_deadline_closes(ctx: Context) -> Iterator[Problem]:
    defn = ctx.defn
    if not graph_complete(defn):
        return
    edges = state_edges(defn)
    for d in defn.deadlines:
        if d.start not in defn.states:
            continue
        span = reachable(edges, [d.start], stop=d.until)
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


def check_rungs_after_breach(ctx: Context) -> Iterator[Problem]:
    """A rung counted `from: start` acts no earlier than the breach: an `after` shorter than `within`
    would act at the breach, which is a rung without `from: start` written the long way round."""
    for d in ctx.defn.deadlines:
        for e in d.escalate:
            if e.counted_from == "start" and d.within_seconds > 0 and e.after_seconds < d.within_seconds:
                after = ctx.raw((*e.path, "after"))
                yield ctx.problem(
                    (*e.path, "after") if after is not None else e.path,
                    "escalation-before-breach",
                    f"the rung counts `after` from the span's start, but {after or '0s'} is within the "
                    f"deadline's {ctx.raw((*d.path, 'within'))}: it can only act at the breach",
                    "make `after` longer than `within`, or drop `from: start` to count from the breach",
                    severity="warning",
                )


def check_escalations(ctx: Context) -> Iterator[Problem]:
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
