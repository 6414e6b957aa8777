"""Checks of automatic states: the worker does their work through a timeout due at once, so a state may
not also declare a timeout of its own."""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.engine.definition.semantic.context import Context
from sopflow.engine.errors import Problem

CODES = ("automatic-timeout",)


def check_automatic(ctx: Context) -> Iterator[Problem]:
    for s in ctx.defn.states.values():
        if s.automatic is None:
            continue
        raw = ctx.raw(s.path) or {}
        if "timeout" in raw:
            yield ctx.problem(
                (*s.path, "timeout"),
                "automatic-timeout",
                f"state `{s.name}` is automatic and has a `timeout`: the worker starts its work at once, "
                "and its outcome moves the case on",
                "remove `timeout`; a deadline on the state (or on `on_error`) says how long it may take",
                key=True,
            )
