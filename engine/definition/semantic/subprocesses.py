"""Sub-process checks: a state that runs a case of another definition must name one that exists, map each
of its final states (and only those) to a state here, move data between fields both declare, and never
lead back to itself through other sub-processes.

What one definition can judge alone (the fields of its own data) is a `Check`; what needs the other
definitions is `check_links`, which `validate` runs over every definition it checked, looking up a named
definition that was not given among the files beside the one that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from sopflow.engine.definition.loader import Document
from sopflow.engine.definition.model import Definition, Subprocess
from sopflow.engine.definition.semantic.context import Context, did_you_mean, problem
from sopflow.engine.errors import Problem

CODES = ("unknown-definition", "unknown-outcome", "unmapped-outcome", "subprocess-cycle")
"""The codes `check_links` reports (unknown-data-field is the data checks' own code)."""

Lookup = Callable[[str, Definition], Definition | None]
"""The definition with an id, as seen from the definition that names it (None: there is none)."""


def _fields(schema: Mapping[str, Any] | None) -> Collection[str] | None:
    props = schema.get("properties") if schema is not None else None
    return props if isinstance(props, Mapping) else None


def _unknown_field(
    ctx_doc: Document, path: tuple[Any, ...], name: str, owner: str, fields: Collection[str], *, key: bool
) -> Problem:
    return problem(
        ctx_doc,
        path,
        "unknown-data-field",
        f"the data schema of {owner} declares no field `{name}`",
        did_you_mean(name, fields) or f"declare it under {owner}'s `data: properties:`",
        key=key,
        severity="warning",
    )


def check_subprocess_fields(ctx: Context) -> Iterator[Problem]:
    """`in` reads and `out` writes fields of this definition's data: each must be declared."""
    fields = _fields(ctx.defn.data_schema)
    if fields is None:
        return
    for s in ctx.defn.states.values():
        sub = s.subprocess
        if sub is None:
            continue
        for child_field, mine in sub.inputs.items():
            if mine not in fields:
                yield _unknown_field(
                    ctx.doc, (*sub.path, "in", child_field), mine, "this definition", fields, key=False
                )
        for mine in sub.outputs:
            if mine not in fields:
                yield _unknown_field(
                    ctx.doc, (*sub.path, "out", mine), mine, "this definition", fields, key=True
                )


def check_links(checked: Sequence[tuple[Definition, Document]], lookup: Lookup) -> list[Problem]:
    """The sub-process problems of every definition in `checked`, each in the file that names the child."""
    found: list[Problem] = []
    for defn, doc in checked:
        for s in defn.states.values():
            if s.subprocess is not None:
                found += _check_one(defn, doc, s.subprocess, lookup)
        cycle = _cycle(defn, lookup)
        if cycle is not None:
            sub, chain = cycle
            found.append(
                problem(
                    doc,
                    (*sub.path, "definition"),
                    "subprocess-cycle",
                    f"`{defn.id}` starts itself through sub-processes: {' → '.join(chain)}",
                    "a case would wait on a case of its own process forever; end the chain with a "
                    "definition that runs no sub-process",
                )
            )
    return found


def _check_one(defn: Definition, doc: Document, sub: Subprocess, lookup: Lookup) -> list[Problem]:
    child = lookup(sub.definition, defn)
    if child is None:
        return [
            problem(
                doc,
                (*sub.path, "definition"),
                "unknown-definition",
                f"the sub-process names the definition `{sub.definition}`, which is neither given nor "
                "beside this file",
                "give its file with this one (sopflow validate definitions/), or fix the id",
            )
        ]
    out: list[Problem] = []
    finals = child.final_states
    for outcome in sub.on:
        if outcome not in finals:
            out.append(
                problem(
                    doc,
                    (*sub.path, "on", outcome),
                    "unknown-outcome",
                    f"`{outcome}` is not a final state of `{child.id}`; its final states are "
                    f"{', '.join(finals) or 'none'}",
                    did_you_mean(outcome, finals) or "map each final state of the child to a state here",
                    key=True,
                )
            )
    missing = [f for f in finals if f not in sub.on]
    if missing:
        out.append(
            problem(
                doc,
                (*sub.path, "on"),
                "unmapped-outcome",
                f"the child `{child.id}` can close in {', '.join(f'`{m}`' for m in missing)}, which `on` "
                "does not map",
                "name a state here for every final state of the child",
                key=True,
            )
        )
    theirs = _fields(child.data_schema)
    if theirs is not None:
        for child_field in sub.inputs:
            if child_field not in theirs:
                out.append(
                    _unknown_field(
                        doc, (*sub.path, "in", child_field), child_field, f"`{child.id}`", theirs, key=True
                    )
                )
        for mine, child_field in sub.outputs.items():
            if child_field not in theirs:
                out.append(
                    _unknown_field(
                        doc, (*sub.path, "out", mine), child_field, f"`{child.id}`", theirs, key=False
                    )
                )
    return out


def _cycle(defn: Definition, lookup: Lookup) -> tuple[Subprocess, list[str]] | None:
    """The first sub-process of `defn` from which its own id is reached again, with the chain of ids."""
    for s in defn.states.values():
        sub = s.subprocess
        if sub is None:
            continue
        chain = _path_to(defn.id, sub.definition, defn, lookup, [defn.id], set())
        if chain is not None:
            return sub, chain
    return None


def _path_to(
    target: str, here: str, seen_from: Definition, lookup: Lookup, chain: list[str], visited: set[str]
) -> list[str] | None:
    chain = [*chain, here]
    if here == target:
        return chain
    if here in visited:
        return None
    visited.add(here)
    found = lookup(here, seen_from)
    if found is None:
        return None
    for s in found.states.values():
        if s.subprocess is not None:
            done = _path_to(target, s.subprocess.definition, found, lookup, chain, visited)
            if done is not None:
                return done
    return None
