"""The JSON Schemas a definition carries (`data` and each event's `payload`): whether they are valid
Draft 2020-12, keys that are no keyword, and the data and payload fields the definition names."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from sopflow.engine.definition.model import USER_FORMAT, Path, Transition, thawed_json
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.errors import Problem

# --- embedded JSON Schemas ------------------------------------------------------------------------

SCHEMA_KEYWORDS = frozenset(
    {
        # core
        "$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary", "$comment",
        "$defs",
        # applicators
        "prefixItems", "items", "contains", "additionalProperties", "properties", "patternProperties",
        "dependentSchemas", "propertyNames", "if", "then", "else", "allOf", "anyOf", "oneOf", "not",
        "unevaluatedItems", "unevaluatedProperties",
        # validation
        "type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
        "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains",
        "minContains", "maxProperties", "minProperties", "required", "dependentRequired",
        # annotations, format and content
        "title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples", "format",
        "contentEncoding", "contentMediaType", "contentSchema",
    }
)  # fmt: skip
"""The keywords of JSON Schema Draft 2020-12. A validator ignores any other key, so in a `data` or
`payload` schema one is most likely a typo (`requried`) or a text split by a comma."""
SUBSCHEMA_KEYWORDS = frozenset(
    {
        "items", "contains", "additionalProperties", "propertyNames", "if", "then", "else", "not",
        "unevaluatedItems", "unevaluatedProperties", "contentSchema",
    }
)  # fmt: skip
"""Keywords whose value is one schema."""
SUBSCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
"""Keywords whose value is a list of schemas."""
SUBSCHEMA_MAP_KEYWORDS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
"""Keywords whose value maps names to schemas."""
RENAMED_KEYWORDS: Mapping[str, str] = MappingProxyType(
    {"definitions": "$defs", "dependencies": "dependentRequired` or `dependentSchemas"}
)
"""Keywords of older drafts, and what Draft 2020-12 calls them."""
JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
JSON_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "array": "a list",
        "object": "a mapping (a schema)",
        "boolean": "true or false",
        "string": "a text",
        "integer": "a whole number",
        "number": "a number",
        "null": "empty",
    }
)
"""The meta-schema's types in a process owner's words."""
SCHEMA_HINT = "see the keyword in JSON Schema Draft 2020-12 (json-schema.org/understanding-json-schema)"


def _embedded_schemas(ctx: Context) -> Iterator[tuple[Any, Path, str]]:
    """The JSON Schemas the definition carries, as plain data: `data` and each payload, with the path
    and the words naming it in a message."""
    if ctx.raw(("data",)) is not None:
        yield thawed_json(ctx.defn.data_schema), ("data",), "the `data` schema"
    for s in ctx.defn.all_states():
        for t in s.transitions:
            if t.payload is not None:
                yield thawed_json(t.payload), (*t.path, "payload"), f"the payload schema of `{t.event}`"
        if s.approval is not None and s.approval.payload is not None:
            path = (*s.approval.path, "payload")
            yield thawed_json(s.approval.payload), path, f"the payload schema of `{s.name}`'s votes"


def check_schema_validity(ctx: Context) -> Iterator[Problem]:
    meta = Draft202012Validator(
        Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for schema, root, what in _embedded_schemas(ctx):
        seen: set[Path] = set()
        for error in meta.iter_errors(schema):
            leaf = _deepest(error)
            path, key = _schema_error_place(leaf, root)
            if path in seen:
                continue  # $dynamicRef makes the meta-schema report some errors several times
            seen.add(path)
            message, hint = _schema_error_text(leaf)
            yield ctx.problem(path, "bad-data-schema", f"{what} is not valid: {message}", hint, key=key)


def check_schema_numbers(ctx: Context) -> Iterator[Problem]:
    for schema, root, what in _embedded_schemas(ctx):
        for path, value in _not_finite(schema, root):
            yield ctx.problem(
                path,
                "bad-data-schema",
                f"{what} is not valid: `{path[-1]}` is {value}, which is not a number JSON can hold",
                "give a finite number (YAML's .nan and .inf have no JSON form), or leave the keyword out",
            )


def _not_finite(value: Any, path: Path) -> Iterator[tuple[Path, float]]:
    """(path, value) of every NaN or infinity in a schema (YAML's `.nan`, `.inf`): the meta-schema takes
    them as numbers, but no comparison with NaN holds and neither has a JSON form."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _not_finite(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _not_finite(item, (*path, i))


def _deepest(error: ValidationError) -> ValidationError:
    """Of an error and those of its alternatives (anyOf), the one deepest in the document: it names the
    part to change. On a tie an alternative wins, as it says more than "not valid under any"."""
    best = error
    for sub in error.context or ():
        candidate = _deepest(sub)
        deeper = len(candidate.absolute_path) > len(best.absolute_path)
        first_tie = best is error and len(candidate.absolute_path) == len(error.absolute_path)
        if deeper or first_tie:
            best = candidate
    return best


def _schema_error_place(error: ValidationError, root: Path) -> tuple[Path, bool]:
    path: Path = (*root, *error.absolute_path)
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        return (*path, error.instance), True  # a bad name (a patternProperties regex): point at the key
    return path, False


def _schema_error_text(error: ValidationError) -> tuple[str, str | None]:
    value = error.instance
    if error.validator == "enum" and error.validator_value == list(JSON_TYPES):
        hint = did_you_mean(str(value), JSON_TYPES) or f"the types are {', '.join(JSON_TYPES)}"
        return f"`{value}` is not a JSON Schema type", hint
    if error.validator == "format" and error.validator_value == "regex":
        return f"`{value}` is not a regular expression", "check the brackets and escape special characters"
    name = next((str(p) for p in reversed(error.absolute_path) if isinstance(p, str)), None)
    if error.validator != "type" or name is None:
        return (f"`{name}`: " if name else "") + error.message, SCHEMA_HINT
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    kinds = " or ".join(JSON_KINDS.get(str(k), str(k)) for k in expected)
    hint = SCHEMA_HINT
    if name == "items" and isinstance(value, list):
        hint = "Draft 2020-12 writes a list of schemas, one per position, as `prefixItems`"
    return f"`{name}` must be {kinds}, not {_json_kind(value)}", hint


def _json_kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text `{value}`"
    return "a list" if isinstance(value, list) else "a mapping"


def check_schema_keywords(ctx: Context) -> Iterator[Problem]:
    for schema, root, what in _embedded_schemas(ctx):
        for path, value in _unknown_keywords(schema, root):
            word = str(path[-1])
            if value is None:
                hint = "its value is empty: an unquoted `, ` inside `{ }` splits a text; quote the text"
            elif word in RENAMED_KEYWORDS:
                hint = f"Draft 2020-12 calls it `{RENAMED_KEYWORDS[word]}`"
            else:
                hint = did_you_mean(word, SCHEMA_KEYWORDS) or "remove it, or keep the note in `description`"
            yield ctx.problem(
                path,
                "unknown-schema-keyword",
                f"`{word}` is not a JSON Schema keyword, so {what} ignores it",
                hint,
                key=True,
                severity="warning",
            )


def _unknown_keywords(schema: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    """(path, value) of every key of the schema and its subschemas that is not a keyword."""
    if not isinstance(schema, Mapping):
        return  # true/false schemas have no keys; a wrong kind of value is bad-data-schema
    for key, value in schema.items():
        here: Path = (*path, key)
        if key == "role" and schema.get("format") == USER_FORMAT:
            continue  # sopflow's own keyword: the role a person's field is bound to (`format: user`)
        if key == "x-sensitive":
            continue  # sopflow's own keyword: the field's class of personal data (`engine.privacy`)
        if key not in SCHEMA_KEYWORDS:
            yield here, value
        elif key in SUBSCHEMA_KEYWORDS:
            yield from _unknown_keywords(value, here)
        elif key in SUBSCHEMA_LIST_KEYWORDS and isinstance(value, list):
            for i, item in enumerate(value):
                yield from _unknown_keywords(item, (*here, i))
        elif key in SUBSCHEMA_MAP_KEYWORDS and isinstance(value, Mapping):
            for name, item in value.items():
                yield from _unknown_keywords(item, (*here, name))


def check_schema_satisfiable(ctx: Context) -> Iterator[Problem]:
    for schema, root, what in _embedded_schemas(ctx):
        for path, name, allowed in _forbidden_required(schema, root):
            yield ctx.problem(
                path,
                "unsatisfiable-schema",
                f"{what} requires `{name}`, which its `additionalProperties: false` forbids: "
                "no case can satisfy it",
                did_you_mean(name, allowed)
                or f"declare `{name}` under `properties:`, or drop it from `required`",
            )


def _forbidden_required(schema: Any, path: Path) -> Iterator[tuple[Path, str, Collection[str]]]:
    """(path, name, the names allowed) of each `required` name that the same object schema forbids with
    `additionalProperties: false` (not in `properties`, matching no `patternProperties`), here and in
    the schemas of its properties."""
    if not isinstance(schema, Mapping):
        return
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    patterns = schema.get("patternProperties")
    required = schema.get("required")
    if schema.get("additionalProperties") is False and isinstance(required, list):
        for i, name in enumerate(required):
            if isinstance(name, str) and name not in props and not _matches_any(name, patterns):
                yield (*path, "required", i), name, list(props)
    for name, sub in props.items():
        yield from _forbidden_required(sub, (*path, "properties", name))


def _matches_any(name: str, patterns: Any) -> bool:
    import re

    if not isinstance(patterns, Mapping):
        return False
    for pattern in patterns:
        try:
            if re.search(str(pattern), name):
                return True
        except re.error:
            return True  # a bad pattern is bad-data-schema's to report; do not pile on
    return False


# --- data and payload fields ----------------------------------------------------------------------


def _properties(schema: Mapping[str, Any] | None) -> Collection[str] | None:
    props = schema.get("properties") if schema is not None else None
    return props if isinstance(props, Mapping) else None


def check_data_fields(ctx: Context) -> Iterator[Problem]:
    fields = _properties(ctx.defn.data_schema)
    # What one task per item sets goes into its `collect` field, under the item: not the case's fields.
    collected = {
        id(bs)
        for st in ctx.defn.states.values()
        if st.parallel is not None and st.parallel.collect and st.parallel.template is not None
        for bs in st.parallel.template.states.values()
    }
    for s in ctx.defn.all_states():
        assign = s.assign
        from_data = assign is not None and assign.kind == "from_data"
        if fields is not None and assign is not None and from_data and assign.value not in fields:
            yield _unknown_data(ctx, assign.value, (*assign.path, "from_data"), fields, key=False)
        if id(s) in collected:
            continue
        for t in s.transitions:
            yield from _transition_fields(ctx, t, fields)


def _unknown_data(ctx: Context, name: str, path: Path, fields: Collection[str], *, key: bool) -> Problem:
    return ctx.problem(
        path,
        "unknown-data-field",
        f"the data schema declares no field `{name}`",
        did_you_mean(name, fields) or "declare it under `data: properties:`",
        key=key,
        severity="warning",
    )


def _transition_fields(ctx: Context, t: Transition, fields: Collection[str] | None) -> Iterator[Problem]:
    if fields is not None:
        for name in (*t.set, *t.copy):
            if name not in fields:
                part = "set" if name in t.set else "copy"
                yield _unknown_data(ctx, name, (*t.path, part, name), fields, key=True)
    payload_fields = _properties(t.payload)
    if payload_fields is None:
        return
    for target, source in t.copy.items():
        if source not in payload_fields:
            yield ctx.problem(
                (*t.path, "copy", target),
                "unknown-payload-field",
                f"`{t.event}`'s payload declares no field `{source}`",
                did_you_mean(source, payload_fields)
                or "declare it under the transition's `payload: properties:`",
            )
