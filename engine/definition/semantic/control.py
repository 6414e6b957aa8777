"""Case-control checks: what a process owner writes about staying in a state or entering it again.

A transition back to its own state records its step and stays (the assignee, a claim, the state's timeout
and an approval round go on); `reenter: true` asks for leaving and entering the state again. On a
transition to another state `reenter` means nothing, and saying it there is a mistake worth naming.
`control:` names the roles that may cancel, suspend and resume cases (besides administrators).
"""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.engine.definition.model import CONTROL_RECORDS
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.errors import Problem

START_WORK = "start_work"
"""The built-in event with which the assignee of a state with `assign` starts its work (engine.step)."""

CODES = ("reenter-not-self",)
"""The codes the case-control checks report."""


def check_reentry(ctx: Context) -> Iterator[Problem]:
    """`reenter: true` only on a transition whose `to` is its own state."""
    for s in ctx.defn.states.values():
        for t in s.transitions:
            if t.reenter and t.target != s.name:
                yield ctx.problem(
                    (*t.path, "reenter"),
                    "reenter-not-self",
                    f"`{t.event}` in `{s.name}` says `reenter: true` but goes to `{t.target}`: "
                    "only a transition back to its own state can enter it again",
                    f"remove `reenter`, or write `to: {s.name}` to enter `{s.name}` again",
                    key=True,
                )


def check_control(ctx: Context) -> Iterator[Problem]:
    """The roles `control:` names must be the org's, and no event may take the name of a record that acts
    on a whole case (the history and `audit verify` would mistake one for the other)."""
    control = ctx.defn.control
    if control is not None and ctx.org is not None:
        for key, roles in (("cancel", control.cancel), ("suspend", control.suspend)):
            for i, role in enumerate(roles):
                if role not in ctx.org.roles:
                    yield ctx.problem(
                        (*control.path, key, i),
                        "unknown-role",
                        f"the org has no role `{role}`",
                        did_you_mean(role, ctx.org.roles) or f"roles are defined in {ctx.org.file}",
                    )
    events = {e for s in ctx.defn.states.values() for e in s.events}
    for s in ctx.defn.states.values():
        if s.assign is not None and s.assign.kind == "fired_by" and s.assign.value not in events:
            yield ctx.problem(
                (*s.assign.path, "fired_by"),
                "unknown-event",
                f"`assign: {{fired_by: {s.assign.value}}}` in `{s.name}` names no event of the definition",
                did_you_mean(s.assign.value, events) or "name the event of the earlier step",
            )
        if s.assign is not None and START_WORK in s.events:
            yield ctx.problem(
                (*s.path, "on", START_WORK),
                "duplicate-event",
                f"`{START_WORK}` in `{s.name}` clashes with the built-in event with which its assignee "
                "starts the work",
                "rename the event",
                key=True,
            )
        for event in sorted(CONTROL_RECORDS & set(s.events)):
            yield ctx.problem(
                (*s.path, "on", event),
                "duplicate-event",
                f"`{event}` in `{s.name}` clashes with the record of that name, which acts on a whole case",
                "rename the event",
                key=True,
            )
