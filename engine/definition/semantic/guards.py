"""The events of a state and the guards that choose between them: alternatives that can never be
taken, events that clash with built-in ones, alternatives that declare different payloads, and guards
that do not compile or read a payload a choice cannot have."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sopflow.engine.definition.expressions import ExpressionRejected, compile_guard
from sopflow.engine.definition.model import (
    APPROVE,
    REJECT,
    RESUME,
    SPECIAL_ACTORS,
    Definition,
    Expression,
    State,
    Transition,
    thawed_json,
)
from sopflow.engine.definition.semantic.context import Context
from sopflow.engine.errors import Problem

CLAIM = "claim"
"""The built-in event with which a member of the role takes a case of an `assign: {claim: ...}` state."""


# --- events ---------------------------------------------------------------------------------------


def _event_clash(ctx: Context, s: State, event: str, why: str) -> Problem:
    return ctx.problem(
        (*s.path, "on", event),
        "duplicate-event",
        f"`{event}` in `{s.name}` clashes with {why}",
        "rename the event",
        key=True,
    )


def check_duplicate_events(ctx: Context) -> Iterator[Problem]:
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
        if s.subprocess is not None and RESUME in names:
            yield _event_clash(ctx, s, RESUME, "the engine's own event that resumes a sub-process state")


def _may_share_actor(ctx: Context, one: Transition, other: Transition) -> bool:
    """Whether one person may be allowed to fire both transitions."""
    if set(one.by) & set(other.by) or any(r in SPECIAL_ACTORS for r in (*one.by, *other.by)):
        return True
    org = ctx.org
    return org is not None and any(
        set(u.roles) & set(one.by) and set(u.roles) & set(other.by) for u in org.users.values()
    )


def check_alternative_payloads(ctx: Context) -> Iterator[Problem]:
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


# --- guards ---------------------------------------------------------------------------------------


def _guards(defn: Definition) -> Iterator[tuple[Expression, Mapping[str, Any] | None, bool]]:
    """Every guard, with the payload schema it may read and whether it routes a choice."""
    for s in defn.all_states():
        for t in s.transitions:
            if t.when is not None:
                yield t.when, t.payload, False
        for b in s.choice:
            if b.when is not None:
                yield b.when, None, True


def check_guards(ctx: Context) -> Iterator[Problem]:
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
