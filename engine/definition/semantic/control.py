"""Case-control checks: what a process owner writes about staying in a state or entering it again.

A transition back to its own state records its step and stays (the assignee, a claim, the state's timeout
and an approval round go on); `reenter: true` asks for leaving and entering the state again. On a
transition to another state `reenter` means nothing, and saying it there is a mistake worth naming.
`control:` names the roles that may cancel any open case (besides administrators).
"""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.engine.definition.model import CANCEL_CASE
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.errors import Problem

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
    """The roles `control: cancel:` names must be the org's, and no event may take the name of the record
    with which a case is cancelled (the history and `audit verify` would mistake one for the other)."""
    control = ctx.defn.control
    if control is not None and ctx.org is not None:
        for i, role in enumerate(control.cancel):
            if role not in ctx.org.roles:
                yield ctx.problem(
                    (*control.path, "cancel", i),
                    "unknown-role",
                    f"the org has no role `{role}`",
                    did_you_mean(role, ctx.org.roles) or f"roles are defined in {ctx.org.file}",
                )
    for s in ctx.defn.states.values():
        if CANCEL_CASE in s.events:
            yield ctx.problem(
                (*s.path, "on", CANCEL_CASE),
                "duplicate-event",
                f"`{CANCEL_CASE}` in `{s.name}` clashes with the record that cancels a case",
                "rename the event",
                key=True,
            )
