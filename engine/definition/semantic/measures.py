"""Checks of `measures:`: what the reports count must exist in the process.

An error or complaint event must be an event of some state (a misspelt name would count nothing, and the
report would say the process never errs); the satisfaction field must be a number (or integer) field of
the `data` schema, so that a step can set a score the report can average.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.errors import Problem

CODES = ("measure-unknown-event", "satisfaction-not-a-number")
"""The codes the measures checks report."""


def check_measures(ctx: Context) -> Iterator[Problem]:
    measures = ctx.defn.measures
    if measures is None:
        return
    events = {e for s in ctx.defn.all_states() for e in s.events}
    for key, names in (("errors", measures.errors), ("complaints", measures.complaints)):
        for i, name in enumerate(names):
            if name not in events:
                yield ctx.problem(
                    (*measures.path, key, i),
                    "measure-unknown-event",
                    f"`measures: {key}:` names `{name}`, which is no event of the definition: it would "
                    "count nothing",
                    did_you_mean(name, events) or "name an event one of the states has under `on:`",
                )
    field_name = measures.satisfaction_field
    if field_name is None:
        return
    props = ctx.defn.data_schema.get("properties")
    field = props.get(field_name) if isinstance(props, Mapping) else None
    kind = field.get("type") if isinstance(field, Mapping) else None
    if kind not in ("number", "integer"):
        yield ctx.problem(
            (*measures.path, "satisfaction", "field"),
            "satisfaction-not-a-number",
            f"the satisfaction field `{field_name}` is "
            + ("not a field of `data`" if field is None else "not a number field of `data`"),
            f"declare `{field_name}: {{type: integer, minimum: 1, maximum: 5}}` under `data: properties:`",
        )
