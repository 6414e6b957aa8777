"""The answer of a write (a start, a step, a reassignment, a cancellation...) as the person who made it may
see it: a person whose grants show the case only desensitised (`all_desensitised`) gets the case and the
record the way `show` and `history` show them to them — people as tokens, `x-sensitive` data desensitised,
free text, the facts behind the step and the hashes left out — never the row as stored.

A case the step moved out of their view entirely is answered desensitised too: they took the step, but
may read no more of the case than that. Without a privacy key to make tokens with, the answer leaves
the case's people and data out."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from sopflow.engine import access
from sopflow.engine.errors import ConfigurationError, NotFound
from sopflow.engine.store.records import CaseRow

if TYPE_CHECKING:
    from sopflow.engine.definition.model import Org
    from sopflow.engine.runtime import Engine, Result
    from sopflow.engine.step import Actor


def answer(
    engine: Engine, row: CaseRow, result: Result, actor: str | None, *, known: tuple[Org, Actor] | None = None
) -> Result:
    """`result` (of a write by `actor` that left the case as `row`) as `actor` may see it; `known`: the org
    and the person the write was decided with, when the write read them (nothing is read again)."""
    if actor is None:
        return result
    org = engine.org() if known is None else known[0]
    if org.access is None or not any(g.scope == "all_desensitised" for g in org.access):
        return result  # no grant desensitises anything: decided without a read
    if known is not None:
        person = known[1]
    else:
        try:
            person = engine.actor(actor, org=org)
        except NotFound:
            return result  # the system (a timer, the worker), not a person of the org
    if not any(g.scope == "all_desensitised" and g.role in person.roles for g in org.access):
        return result  # none of their grants desensitises: they see what they reach raw
    try:
        how = access.judge(engine, org, person, row, "view")
    except access.REFUSALS:
        how = "desensitised"
    if how == "raw":
        return result
    try:
        case = access.shown_case(engine, result.case, row, how)
        [record] = access.shown_history(engine, row, [result.record], how)
    except ConfigurationError:
        # No privacy key to make tokens with: the step is stored; its answer holds nothing of the case's
        # people and data rather than refusing what was done (`show` names the missing key).
        case = replace(result.case, data={}, starter="", assignee=None, submitter=None)
        record = replace(
            result.record, actor="", on_behalf_of=None, payload={}, data_change={}, comment=None,
            reason=None, detail={}, prev_hash="", hash="",
        )  # fmt: skip
    return replace(result, case=case, record=record)
