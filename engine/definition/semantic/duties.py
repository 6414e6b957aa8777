"""The second edition's constructs of who may act and what a step computes: `not_by` exclusions that must
name real events and fields, the `start` rule, computed `set` (`compute:`) expressions that must compile
and give values the data allows, user fields bound to roles, approvals that carry a payload, and events
only the clock fires."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator

from sopflow.engine.definition.expressions import ExpressionRejected, Guard, compile_guard
from sopflow.engine.definition.model import (
    APPROVE,
    AUTOMATIC_DONE,
    AUTOMATIC_FAILED,
    DATA_PREFIX,
    FIRED_PREFIX,
    REJECT,
    SYSTEM,
    USER_FORMAT,
    Approval,
    Expression,
    Path,
    thawed_json,
)
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.definition.semantic.guards import CLAIM
from sopflow.engine.errors import GuardRefused, Problem

CODES = (
    "unknown-exclusion",
    "compute-type",
    "bad-user-field",
    "clock-event-never-fired",
    "excludes-every-actor",
)
"""The codes this module reports besides the guard language's and `unknown-role`/`unknown-data-field`/
`unknown-payload-field`."""


def _exclusions(ctx: Context) -> Iterator[tuple[str, Path]]:
    for s in ctx.defn.all_states():
        for t in s.transitions:
            yield from ((e, (*t.path, "not_by", i)) for i, e in enumerate(t.not_by))
        if s.approval is not None:
            yield from ((e, (*s.approval.path, "not_by", i)) for i, e in enumerate(s.approval.not_by))
        if s.assign is not None:
            yield from ((e, (*s.assign.path, "not_by", i)) for i, e in enumerate(s.assign.not_by))


def check_self_exclusion(ctx: Context) -> Iterator[Problem]:
    """A transition whose `by` names only people its `not_by` excludes ($starter, $assignee): nobody
    could ever fire it."""
    for s in ctx.defn.all_states():
        for t in s.transitions:
            if t.by and t.not_by and set(t.by) <= set(t.not_by):
                yield ctx.problem(
                    (*t.path, "not_by"),
                    "excludes-every-actor",
                    f"`{t.event}` in `{s.name}` is for {', '.join(t.by)} only, and `not_by` excludes "
                    f"{'them' if len(t.by) > 1 else 'that person'}: nobody could ever fire it",
                    "name in `by` the role that should act, or drop the entry from `not_by`",
                    key=True,
                )


def _events(ctx: Context) -> set[str]:
    """Every event a case of the definition can record: written ones, votes, claims and the start."""
    names = {"start"}
    for s in ctx.defn.states.values():
        names.update(t.event for t in s.transitions)
        if s.approval is not None:
            names.update((APPROVE, REJECT))
        if s.assign is not None and s.assign.kind == "claim":
            names.add(CLAIM)
    return names


def _data_fields(ctx: Context) -> list[str] | None:
    props = ctx.defn.data_schema.get("properties")
    return [str(p) for p in props] if isinstance(props, Mapping) else None


def check_exclusions(ctx: Context) -> Iterator[Problem]:
    events = _events(ctx)
    fields = _data_fields(ctx)
    for entry, path in _exclusions(ctx):
        if entry.startswith(FIRED_PREFIX):
            event = entry[len(FIRED_PREFIX) :]
            if event not in events:
                yield ctx.problem(
                    path,
                    "unknown-exclusion",
                    f"`{entry}` excludes whoever fired `{event}`, but no state has that event",
                    did_you_mean(event, events) or f"the events: {', '.join(sorted(events))}",
                )
        elif entry.startswith(DATA_PREFIX):
            name = entry[len(DATA_PREFIX) :]
            if fields is not None and name not in fields:
                yield ctx.problem(
                    path,
                    "unknown-exclusion",
                    f"`{entry}` excludes the person in data field `{name}`, which the data schema does "
                    "not declare",
                    did_you_mean(name, fields) or "declare it under `data: properties:` (`format: user`)",
                )


def _compile(ctx: Context, expr: Expression, payload: Mapping[str, Any] | None) -> Iterator[Problem | Guard]:
    try:
        yield compile_guard(
            expr.text,
            data_schema=thawed_json(ctx.defn.data_schema),
            payload_schema=thawed_json(payload) if payload is not None else None,
        )
    except ExpressionRejected as rejected:
        for issue in rejected.issues:
            yield ctx.problem(expr.path, issue.code, issue.message, issue.hint)


def check_start(ctx: Context) -> Iterator[Problem]:
    rule = ctx.defn.start
    if rule is None:
        return
    org = ctx.org
    if org is not None:
        for i, role in enumerate(rule.by):
            if role not in org.roles:
                yield ctx.problem(
                    (*rule.path, "by", i),
                    "unknown-role",
                    f"the org has no role `{role}`",
                    did_you_mean(role, org.roles) or f"roles are defined in {org.file}",
                )
    if rule.when is not None:
        # A start has no payload: an empty payload schema makes `payload.x` an unknown field.
        yield from (p for p in _compile(ctx, rule.when, {"properties": {}}) if isinstance(p, Problem))


def _computes(ctx: Context) -> Iterator[tuple[Mapping[str, Expression], Mapping[str, Any] | None]]:
    for s in ctx.defn.all_states():
        for t in s.transitions:
            if t.compute:
                yield t.compute, t.payload
        if s.approval is not None and s.approval.compute:
            yield s.approval.compute, s.approval.payload


def check_computes(ctx: Context) -> Iterator[Problem]:
    props = ctx.defn.data_schema.get("properties")
    fields = props if isinstance(props, Mapping) else None
    for compute, payload in _computes(ctx):
        for name, expr in compute.items():
            if fields is not None and name not in fields:
                yield ctx.problem(
                    expr.path,
                    "unknown-data-field",
                    f"the data schema declares no field `{name}`",
                    did_you_mean(name, fields) or "declare it under `data: properties:`",
                    key=True,
                    severity="warning",
                )
            for found in _compile(ctx, expr, payload):
                if isinstance(found, Problem):
                    yield found
                elif fields is not None and name in fields:
                    roots = {"data": thawed_json(ctx.defn.data_schema), "payload": thawed_json(payload)}
                    yield from _result_types(ctx, name, expr, thawed_json(fields[name]), roots)


def _result_types(
    ctx: Context, name: str, expr: Expression, schema: Any, roots: Mapping[str, Any]
) -> Iterator[Problem]:
    """A result the expression can give (the whole expression, or an arm of `? :`) that the field's
    schema does not allow, so that the step would always be refused: a literal the schema refuses, or a
    field read (`payload.score`) whose declared type the field cannot hold."""
    wanted = _kinds(schema)
    for text in _results(expr.text):
        if not _FIELD_READ.fullmatch(text) or not wanted:
            continue
        root, *names = text.split(".")
        given = _kinds(_field_schema(roots.get(root), names))
        if given and not any(k in wanted or (k == "integer" and "number" in wanted) for k in given):
            yield ctx.problem(
                expr.path,
                "compute-type",
                f"`{name}` can be computed as {text}, which is {' or '.join(sorted(given))}, but the field "
                f"holds {' or '.join(sorted(wanted))}",
                "make every result a value the field's schema allows (its type, its enum)",
            )
            return
    validator = Draft202012Validator(schema)
    for text in _literal_results(expr.text):
        try:
            value = compile_guard(text).value(data={}, payload={}, actor={})
        except (ExpressionRejected, GuardRefused):
            continue  # not a plain literal after all: nothing to say about it
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            yield ctx.problem(
                expr.path,
                "compute-type",
                f"`{name}` can be computed as {text}, which the field does not allow: {error.message}",
                "make every result a value the field's schema allows (its type, its enum)",
            )
            return


_FIELD_READ = re.compile(r"(data|payload)(\.[A-Za-z_][A-Za-z0-9_]*)+")
_JSON_KIND = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _kinds(schema: Any) -> set[str]:
    """The JSON types a schema allows, from its `type` or its `enum`/`const` values; empty if unsaid."""
    if not isinstance(schema, Mapping):
        return set()
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {str(t) for t in declared}
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if isinstance(values, list):
        return {_JSON_KIND.get(type(v), "null") for v in values}
    return set()


def _field_schema(schema: Any, names: list[str]) -> Any:
    for part in names:
        props = schema.get("properties") if isinstance(schema, Mapping) else None
        if not isinstance(props, Mapping) or part not in props:
            return None
        schema = props[part]
    return schema


def _literal_results(text: str) -> list[str]:
    """The results of `text` (see `_results`) that are literals."""
    return [r for r in _results(text) if _is_literal(r)]


def _results(text: str) -> list[str]:
    """The parts of `a ? b : c ? d : e` that are results (b, d, e); the whole text when it has no `?`.
    Strings are skipped over so that a `?` or `:` inside one does not count."""
    parts: list[str] = []
    depth = 0
    current = ""
    quote = ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch in "?:" and depth == 0:
            parts.append(current.strip())
            parts.append(ch)
            current = ""
            continue
        current += ch
    parts.append(current.strip())
    if len(parts) == 1:
        results = parts
    else:  # c1 ? r1 : c2 ? r2 : r3 — a result follows a `?`, and the last part is one
        results = [parts[i + 1] for i in range(len(parts) - 1) if parts[i] == "?"] + [parts[-1]]
    return results


def _is_literal(text: str) -> bool:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and text[0] not in text[1:-1]:
        return True
    if text in ("true", "false", "null"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _user_schemas(ctx: Context) -> Iterator[tuple[Any, Path]]:
    if ctx.raw(("data",)) is not None:
        yield thawed_json(ctx.defn.data_schema), ("data",)
    for s in ctx.defn.all_states():
        for t in s.transitions:
            if t.payload is not None:
                yield thawed_json(t.payload), (*t.path, "payload")
        if s.approval is not None and s.approval.payload is not None:
            yield thawed_json(s.approval.payload), (*s.approval.path, "payload")


def _fields_and_items(props: Mapping[str, Any], root: Path) -> Iterator[tuple[str, Mapping[str, Any], Path]]:
    """Each field of an object schema, and the items of each list field (a list of people is checked
    like a person's field: `items: {type: string, format: user, role: ROLE}`)."""
    for name, sub in props.items():
        if not isinstance(sub, Mapping):
            continue
        yield name, sub, (*root, name)
        items = sub.get("items")
        if isinstance(items, Mapping):
            yield f"{name}.items", items, (*root, name, "items")


def check_user_fields(ctx: Context) -> Iterator[Problem]:
    org = ctx.org
    for schema, root in _user_schemas(ctx):
        props = schema.get("properties") if isinstance(schema, Mapping) else None
        if not isinstance(props, Mapping):
            continue
        for name, sub, path in _fields_and_items(props, (*root, "properties")):
            is_user = sub.get("format") == USER_FORMAT
            if "role" in sub and not is_user:
                yield ctx.problem(
                    (*path, "role"),
                    "bad-user-field",
                    f"field `{name}` names a role, but it is not a person's field",
                    "add `format: user` (and `type: string`) to bind the field to the role",
                    key=True,
                )
            if is_user and sub.get("type", "string") != "string":
                yield ctx.problem(
                    (*path, "type"),
                    "bad-user-field",
                    f"field `{name}` holds a person (`format: user`), so its type is `string`",
                    "write `type: string`",
                )
            role = sub.get("role")
            if is_user and org is not None and isinstance(role, str) and role not in org.roles:
                yield ctx.problem(
                    (*path, "role"),
                    "unknown-role",
                    f"the org has no role `{role}`",
                    did_you_mean(role, org.roles) or f"roles are defined in {org.file}",
                )


def _timer_events(ctx: Context) -> set[tuple[str, str]]:
    fired = {(s.name, s.timeout.fire) for s in ctx.defn.states.values() if s.timeout is not None}
    escalated = {e.target for d in ctx.defn.deadlines for e in d.escalate if e.action == "fire"}
    states = ctx.defn.states.values()
    return fired | {(s.name, t.event) for s in states for t in s.transitions if t.event in escalated}


def check_clock_events(ctx: Context) -> Iterator[Problem]:
    timed = _timer_events(ctx)
    for s in ctx.defn.states.values():
        for t in s.transitions:
            if s.automatic is not None and t.event in (AUTOMATIC_DONE, AUTOMATIC_FAILED):
                continue  # the worker fires them with the automatic work's outcome
            if SYSTEM in t.by and (s.name, t.event) not in timed:
                yield ctx.problem(
                    (*t.path, "by"),
                    "clock-event-never-fired",
                    f"`{t.event}` in `{s.name}` is for the clock alone (`$system`), but no timeout or "
                    "escalation fires it there: nobody ever could",
                    f"add `timeout: {{after: ..., fire: {t.event}}}` to `{s.name}` or an escalation "
                    f"`fire: {t.event}`, or let people fire it",
                )


def check_approval_fields(ctx: Context) -> Iterator[Problem]:
    fields = _data_fields(ctx)
    for s in ctx.defn.states.values():
        a = s.approval
        if a is None:
            continue
        yield from _approval_fields(ctx, a, fields)


def _approval_fields(ctx: Context, a: Approval, fields: list[str] | None) -> Iterator[Problem]:
    if fields is not None:
        for part, names in (("set", a.set), ("copy", a.copy)):
            for name in names:
                if name not in fields:
                    yield ctx.problem(
                        (*a.path, part, name),
                        "unknown-data-field",
                        f"the data schema declares no field `{name}`",
                        did_you_mean(name, fields) or "declare it under `data: properties:`",
                        key=True,
                        severity="warning",
                    )
    props = a.payload.get("properties") if a.payload is not None else None
    declared = [str(p) for p in props] if isinstance(props, Mapping) else ([] if a.payload is None else None)
    if declared is None:
        return
    for target, source in a.copy.items():
        if source not in declared:
            yield ctx.problem(
                (*a.path, "copy", target),
                "unknown-payload-field",
                f"the approval's payload declares no field `{source}`"
                if a.payload is not None
                else f"`copy` takes `{source}` from a vote's payload, but the approval declares no `payload`",
                did_you_mean(source, declared) or "declare it under the approval's `payload: properties:`",
            )
