"""Compile a checked definition onto a `transitions` state machine: the only module that imports it.

One `transitions.Machine` is built per definition version, with no model attached; each fire hands the
machine a throwaway holder carrying the case's current state, so the number of cases never touches the
machine (attaching 100,000 models to one Machine would take about a minute).

The machine holds the graph: every event of every state, in the order written, each with its guard as a
condition, so that for alternatives the first whose guard holds wins. Two internal events carry what
the engine decides itself: `ROUTE` with one transition per choice branch (their guards as conditions,
`else` last, unconditional) and `APPROVED`/`REJECTED` out of approval states.

Everything is compiled on first need, not up front: the machine (and the `transitions` import) on the
first fire, each CEL guard on its first evaluation, each JSON Schema validator on its first check. A
command that only reads cases (`sopflow show`) needs the definition and none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sopflow.engine.definition.model import (
    FIRED_PREFIX,
    Approval,
    Branch,
    Definition,
    Expression,
    Path,
    State,
    Transition,
    thawed_json,
)
from sopflow.engine.errors import DefinitionError, Problem

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from transitions import EventData, Machine

    from sopflow.engine.definition.expressions import Guard

ROUTE = "__route__"
APPROVED = "__approved__"
REJECTED = "__rejected__"
INTERNAL_EVENTS = frozenset({ROUTE, APPROVED, REJECTED})


Taken = Transition | Branch | None
Conditions = list[str | Callable[..., bool | None]]
"""What `transitions` takes as a transition's conditions."""


@dataclass(slots=True)
class _Holder:
    """What `transitions` moves: the state of one fire and the transition or branch it took."""

    state: str
    taken: Taken = None


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What a guard sees (the case's data, the event's payload, the acting person) and which of the
    state's transitions the actor may fire at all (by their `path`)."""

    data: Mapping[str, Any]
    payload: Mapping[str, Any]
    actor: Mapping[str, Any]
    permitted: frozenset[Path] = frozenset()
    case: Mapping[str, Any] | None = None
    """What the guard sees of the case (`case.started_by`, ...); see `engine.step.case_view`."""


def _compile(definition: Definition, when: Expression, payload_schema: Mapping[str, Any] | None) -> Guard:
    # The CEL extension loads with the first guard compiled.
    from sopflow.engine.definition.expressions import ExpressionRejected, compile_guard

    try:
        return compile_guard(when.text, data_schema=definition.data_schema, payload_schema=payload_schema)
    except ExpressionRejected as exc:
        problems = [
            Problem(definition.file, 1, 1, issue.code, issue.message, issue.hint) for issue in exc.issues
        ]
        raise DefinitionError(problems) from exc


class _LazyGuard:
    """A transition's or branch's guard as a `transitions` condition, compiled on its first evaluation.

    The CEL program is handed only the roots it reads: converting the actor into CEL values costs more
    than evaluating a simple guard, and a guard that never names `actor` cannot depend on it."""

    __slots__ = ("_definition", "_guard", "_payload_schema", "_uses_actor", "_uses_case", "_when")

    def __init__(
        self, definition: Definition, when: Expression, payload_schema: Mapping[str, Any] | None
    ) -> None:
        self._definition = definition
        self._when = when
        self._payload_schema = payload_schema
        self._guard: Guard | None = None
        self._uses_actor = True
        self._uses_case = True

    def guard(self) -> Guard:
        guard = self._guard
        if guard is None:
            guard = _compile(self._definition, self._when, self._payload_schema)
            self._uses_actor = "actor" in guard.program.variables()
            self._uses_case = "case" in guard.program.variables()
            self._guard = guard
        return guard

    def __call__(self, event: EventData) -> bool:
        guard = self._guard if self._guard is not None else self.guard()
        ctx: GuardContext = event.kwargs["context"]
        return guard.evaluate(
            data=ctx.data,
            payload=ctx.payload,
            actor=ctx.actor if self._uses_actor else {},
            case=ctx.case if self._uses_case else None,
        )


def _permitted_condition(path: Path) -> Callable[[EventData], bool]:
    def check(event: EventData) -> bool:
        ctx: GuardContext = event.kwargs["context"]
        return path in ctx.permitted

    return check


def _record(taken: Transition | Branch) -> Callable[[EventData], None]:
    def record(event: EventData) -> None:
        holder = event.model
        assert isinstance(holder, _Holder)
        holder.taken = taken

    return record


@dataclass(frozen=True, slots=True)
class Fired:
    """The result of a fire on the machine: the new state and what was taken to reach it."""

    state: str
    taken: Taken


def _errors(validator: Draft202012Validator, value: Mapping[str, Any]) -> list[str]:
    plain = value if isinstance(value, dict) else thawed_json(value)
    found = sorted(validator.iter_errors(plain), key=lambda e: list(e.absolute_path))
    out = []
    for err in found:
        where = ".".join(str(p) for p in err.absolute_path)
        out.append(f"{where}: {err.message}" if where else err.message)
    return out


class CompiledDefinition:
    """A definition ready to run: its machine, its guards and its validators, each made on first use.
    What it answers never changes; the caches it fills are safe to share between threads (two threads
    racing to fill one build the same thing and either result is kept)."""

    def __init__(self, definition: Definition) -> None:
        self.definition = definition
        self._machine: Machine | None = None
        self._validators: dict[Path | None, Draft202012Validator] = {}
        self._guards: dict[Path, _LazyGuard] = {}
        self._alternatives: dict[tuple[str, str], tuple[Transition, ...]] = {}
        for state in definition.states.values():
            for t in state.transitions:
                key = (state.name, t.event)
                self._alternatives[key] = (*self._alternatives.get(key, ()), t)
                if t.when is not None:
                    self._guards[t.when.path] = _LazyGuard(definition, t.when, t.payload)
                for expr in t.compute.values():
                    self._guards[expr.path] = _LazyGuard(definition, expr, t.payload)
            for branch in state.choice:
                if branch.when is not None:
                    self._guards[branch.when.path] = _LazyGuard(definition, branch.when, None)
            if state.approval is not None:
                for expr in state.approval.compute.values():
                    self._guards[expr.path] = _LazyGuard(definition, expr, state.approval.payload)
        for state in _branch_states(definition):
            # A parallel state's branch steps are decided by `engine.branches`, not the machine: only
            # their guards and computed values are compiled here.
            for t in state.transitions:
                for found in (t.when, *t.compute.values()):
                    if found is not None:
                        self._guards[found.path] = _LazyGuard(definition, found, t.payload)
        start = definition.start
        if start is not None and start.when is not None:
            self._guards[start.when.path] = _LazyGuard(definition, start.when, None)
        texts = _texts(definition)
        self.reads_history = any(t.startswith(FIRED_PREFIX) or "fired_by" in t for t in texts) or any(
            s.assign is not None
            and (s.assign.kind == "fired_by" or any(e.startswith(FIRED_PREFIX) for e in s.assign.not_by))
            for s in definition.states.values()
        )
        """Whether a step needs who fired each earlier event (`fired:` in a `not_by`, `case.fired_by`)."""
        self.reads_case = any(re.search(r"\bcase\b", t) for t in texts)
        """Whether any expression may read `case` (else a step does not build what it would see)."""
        self.reads_lingering = any(
            s.parallel is not None and s.parallel.remaining == "finish" for s in definition.states.values()
        )
        """Whether branches may run on after their join (`remaining: finish`): a step then reads them."""

    def _build(self) -> Machine:
        # transitions (and its Machine) load on the first fire: reading a case never needs them.
        from transitions import Machine

        machine = Machine(
            model=None,
            states=list(self.definition.states),
            initial=self.definition.initial,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
        )
        for state in self.definition.states.values():
            for t in state.transitions:
                conditions: Conditions = [_permitted_condition(t.path), *self._conditions(t.when)]
                machine.add_transition(
                    t.event, state.name, t.target, conditions=conditions, after=[_record(t)]
                )
            for branch in state.choice:
                machine.add_transition(
                    ROUTE,
                    state.name,
                    branch.target,
                    conditions=self._conditions(branch.when),
                    after=[_record(branch)],
                )
            if state.approval is not None:
                machine.add_transition(APPROVED, state.name, state.approval.approved)
                machine.add_transition(REJECTED, state.name, state.approval.rejected)
        self._machine = machine
        return machine

    def _conditions(self, when: Expression | None) -> Conditions:
        return [] if when is None else [self._guards[when.path]]

    def data_errors(self, data: Mapping[str, Any]) -> list[str]:
        """What is wrong with a case's data against the definition's `data` schema (empty: nothing)."""
        return _errors(self._validator(None, self.definition.data_schema), data)

    def payload_errors(self, transition: Transition | Approval, payload: Mapping[str, Any]) -> list[str]:
        """What is wrong with an event's payload against the transition's (or approval's) `payload`."""
        if transition.payload is None:
            return []
        return _errors(self._validator(transition.path, transition.payload), payload)

    def _validator(self, key: Path | None, schema: Mapping[str, Any]) -> Draft202012Validator:
        validator = self._validators.get(key)
        if validator is None:
            # jsonschema takes ~40 ms to import: it loads when data or a payload is first checked, so
            # that commands which only read cases (`show`, `list`, `history`) never pay for it.
            from jsonschema import Draft202012Validator

            validator = Draft202012Validator(
                thawed_json(schema), format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            self._validators[key] = validator
        return validator

    def guard(self, when: Expression) -> Guard:
        """The compiled guard of an expression of this definition (compiled now if it was not yet);
        DefinitionError if it does not compile."""
        return self._guards[when.path].guard()

    def value(self, expr: Expression, context: GuardContext) -> Any:
        """The value of a `compute` expression for this context; GuardRefused when it has none."""
        lazy = self._guards[expr.path]
        return lazy.guard().value(
            data=context.data, payload=context.payload, actor=context.actor, case=context.case
        )

    def check(self, expr: Expression, context: GuardContext) -> bool:
        """Whether a condition outside the machine (a `start: when:`) holds for this context."""
        lazy = self._guards[expr.path]
        return lazy.guard().evaluate(
            data=context.data, payload=context.payload, actor=context.actor, case=context.case
        )

    def fire(self, state: str, event: str, context: GuardContext) -> Fired | None:
        """Run `event` from `state`: where the case goes and by which transition or branch, or None
        when no permitted alternative's guard held.

        The caller has checked that `state` has `event`; guard evaluation errors propagate as
        `GuardRefused` (and a guard that does not compile, in a definition that skipped the checks, as
        `DefinitionError`).
        """
        machine = self._machine or self._build()
        holder = _Holder(state)
        moved: bool = machine.events[event].trigger(holder, context=context)
        return Fired(holder.state, holder.taken) if moved else None

    def alternatives(self, state: str, event: str) -> tuple[Transition, ...]:
        """The transitions written for `event` in `state`, in order."""
        return self._alternatives.get((state, event), ())


def _branch_states(definition: Definition) -> list[State]:
    """The states of every parallel state's branches."""
    tops = {id(s) for s in definition.states.values()}
    return [s for s in definition.all_states() if id(s) not in tops]


def _texts(definition: Definition) -> list[str]:
    """Every expression and `not_by` entry of the definition, as written."""
    texts: list[str] = []
    for state in definition.all_states():
        for t in state.transitions:
            texts += t.not_by
            texts += [e.text for e in (t.when, *t.compute.values()) if e is not None]
        texts += [b.when.text for b in state.choice if b.when is not None]
        if state.approval is not None:
            texts += state.approval.not_by
            texts += [e.text for e in state.approval.compute.values()]
    if definition.start is not None and definition.start.when is not None:
        texts.append(definition.start.when.text)
    return texts
