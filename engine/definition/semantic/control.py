"""Case-control checks: what a process owner writes about staying in a state or entering it again.

A transition back to its own state records its step and stays (the assignee, a claim, the state's timeout
and an approval round go on); `reenter: true` asks for leaving and entering the state again. On a
transition to another state `reenter` means nothing, and saying it there is a mistake worth naming.
"""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.engine.definition.semantic.context import Context
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
