"""The JSON Schema check of a loaded YAML document, with findings a process owner can act on.

The shipped schemas (`schemas/definition.schema.json`, `schemas/org.schema.json`) define the language.
jsonschema reports failures in its own terms ("Additional properties are not allowed", "is not valid
under any of the given schemas"); this module turns each one into a `Problem` at the line and column of
the offending key or value, naming the place in plain words and giving a hint: the closest allowed key
for a typo, the schema's own description of the field, or how to write the value.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator

from sopflow.engine.definition.loader import Document
from sopflow.engine.definition.model import Path
from sopflow.engine.errors import Problem

SCHEMA_NAMES = ("definition", "org", "scenario")

_KINDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping (key: value lines)",
    "array": "a list",
    "null": "empty",
}

# The name patterns of the shipped schemas, said in words.
_PATTERN_WORDS = {
    "^[a-z][a-z0-9_]*$": "lower case letters, digits and underscores, starting with a letter "
    "(like `in_review`)",
    "^[a-z][a-z0-9-]*$": "lower case letters, digits and hyphens, starting with a letter "
    "(like `content-review`)",
    "^[A-Za-z_][A-Za-z0-9_]*$": "letters, digits and underscores, not starting with a digit "
    "(like `project_lead`)",
    "^([a-z][a-z0-9_]*|\\$assignee|\\$starter)$": "a role name (lower case letters, digits and underscores), "
    "`$assignee` or `$starter`",
    "^[a-z][a-z0-9_.-]*$": "lower case letters, digits, `_`, `.` and `-`, starting with a letter",
    "^[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]$": "a span of the day like `09:00-12:00`",
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}$": "a date like `2026-10-01`",
}

_FORMAT_WORDS = {"date": "date (YYYY-MM-DD)", "date-time": "date and time (ISO 8601)"}


def load_schema(name: str) -> dict[str, Any]:
    """The shipped JSON Schema `name` ("definition", "org" or "scenario"), freshly read (callers may change
    it)."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    text = files("sopflow.schemas").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    if not isinstance(schema, dict):
        raise ValueError(f"schemas/{name}.schema.json does not hold a JSON object")
    return schema


@cache
def _validator(name: str) -> Any:
    """One compiled validator per schema, built on first use."""
    return Draft202012Validator(load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def check_definition_schema(doc: Document) -> list[Problem]:
    """Every way `doc` breaks schemas/definition.schema.json, sorted by line and column."""
    return _check(doc, "definition")


def check_org_schema(doc: Document) -> list[Problem]:
    """Every way `doc` breaks schemas/org.schema.json, sorted by line and column."""
    return _check(doc, "org")


def check_scenario_schema(doc: Document) -> list[Problem]:
    """Every way `doc` breaks schemas/scenario.schema.json (a `sopflow test` file), sorted by position."""
    return _check(doc, "scenario")


def _check(doc: Document, name: str) -> list[Problem]:
    found: dict[Problem, None] = {}  # a dict keeps the first of identical findings, in order
    for error in _validator(name).iter_errors(doc.data):
        for leaf in _leaves(error):
            for problem in _problems(leaf, doc):
                found.setdefault(problem)
    return sorted(found, key=lambda p: (p.line, p.col, p.code, p.message))


def _leaves(error: Any) -> list[Any]:
    """The errors worth reporting for one jsonschema error.

    For oneOf/anyOf, the alternatives whose type does not fit the value are dropped, and the errors of
    the closest remaining alternative are reported instead of "not valid under any of the given schemas".
    """
    if error.validator not in ("oneOf", "anyOf") or not error.context or _only_required(error):
        return [error]
    branches: dict[int, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [errors for errors in branches.values() if not any(_wrong_type(e) for e in errors)]
    if not fitting:
        return [error]
    closest = min(fitting, key=len)
    return [leaf for sub in closest for leaf in _leaves(sub)]


def _wrong_type(error: Any) -> bool:
    """Whether the error says the value itself (not something inside it) has the wrong type."""
    return error.validator in ("type", "const", "enum") and not error.relative_path


def _only_required(error: Any) -> bool:
    """Whether every alternative of a oneOf/anyOf only requires keys (the "exactly one of" idiom)."""
    options = error.validator_value
    return all(isinstance(o, Mapping) and set(o) == {"required"} for o in options)


def _problems(error: Any, doc: Document) -> list[Problem]:
    path: Path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        return _unknown_keys(error, path, doc)
    if error.validator == "required":
        return _missing_keys(error, path, doc)
    if "propertyNames" in error.relative_schema_path:
        return [_bad_key_name(error, path, doc)]
    if error.validator in ("oneOf", "anyOf") and _only_required(error):
        return [_exactly_one(error, path, doc)]
    message, hint = _explain(error, path)
    # An empty value has no text of its own to point at: its key is where the reader looks.
    line, col = doc.where(_value_path(error, path), key=error.instance is None)
    return [Problem(doc.file, line, col, "schema", message, hint)]


def _unknown_keys(error: Any, path: Path, doc: Document) -> list[Problem]:
    allowed = list(error.schema.get("properties", {}))
    patterns = list(error.schema.get("patternProperties", {}))
    out = []
    for key in error.instance:
        if key in allowed or any(re.search(p, str(key)) for p in patterns):
            continue
        line, col = doc.where((*path, key), key=True)
        message = f"unknown key `{key}` {_container(path)}"
        out.append(Problem(doc.file, line, col, "unknown-key", message, _suggest(str(key), allowed)))
    return out


def _suggest(word: str, allowed: list[str], noun: str = "keys") -> str:
    close = difflib.get_close_matches(word, allowed, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    if not allowed:
        return f"no {noun} are allowed here"
    return f"allowed {noun} here: " + ", ".join(f"`{k}`" for k in allowed)


def _exactly_one(error: Any, path: Path, doc: Document) -> Problem:
    """The "exactly one of these keys" idiom (oneOf alternatives that only require keys)."""
    forms = [" and ".join(f"`{k}`" for k in option["required"]) for option in error.validator_value]
    if any(" and " in form for form in forms):
        choices = ", or ".join(forms)
    else:
        choices = ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]
    line, col = doc.where(path, key=True)
    description = error.schema.get("description")
    if error.context:  # no alternative matched: something is missing
        return Problem(doc.file, line, col, "missing-key", f"{_name(path)} needs {choices}", description)
    message = f"{_name(path)} must have {choices}, not more than one of them"
    return Problem(doc.file, line, col, "schema", message, description)


def _missing_keys(error: Any, path: Path, doc: Document) -> list[Problem]:
    properties = error.schema.get("properties", {})
    line, col = doc.where(path, key=True)
    out = []
    for key in error.validator_value:
        if key in error.instance:
            continue
        description = properties.get(key, {}).get("description")
        hint = f"`{key}`: {description}" if description else None
        message = f"missing key `{key}` {_container(path)}"
        out.append(Problem(doc.file, line, col, "missing-key", message, hint))
    return out


def _bad_key_name(error: Any, path: Path, doc: Document) -> Problem:
    key = error.instance
    line, col = doc.where((*path, key), key=True)
    if error.validator == "pattern":
        rule = f"must be {_pattern_words(error.validator_value)}"
    elif error.validator == "maxLength":
        rule = f"is too long (at most {error.validator_value} characters)"
    else:
        rule = f"is not allowed: {error.message}"
    return Problem(doc.file, line, col, "schema", f"the name `{key}` {_container(path)} {rule}")


def _value_path(error: Any, path: Path) -> Path:
    """Where to point for an error about a value: a repeated list item rather than the whole list."""
    if error.validator == "uniqueItems":
        index = _first_repeat(error.instance)
        if index is not None:
            return (*path, index)
    return path


def _explain(error: Any, path: Path) -> tuple[str, str | None]:
    """The message and hint for an error about a value (not about a key)."""
    name = _name(path)
    keyword, expected, value = error.validator, error.validator_value, error.instance
    description = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    if keyword == "type":
        message = f"{name} must be {_expected_kinds(expected)}, not {_kind(value)}"
        return message, _type_hint(expected, value) or description
    if keyword in ("oneOf", "anyOf"):
        return _explain_alternatives(error, name), description
    if keyword == "enum":
        options = ", ".join(f"`{o}`" for o in expected)
        hint = _suggest(value, [str(o) for o in expected], "values") if isinstance(value, str) else None
        return f"{name} must be one of {options}, not `{_show(value)}`", hint or description
    if keyword == "const":
        return f"{name} must be `{_show(expected)}`, not `{_show(value)}`", description
    if keyword == "pattern":
        return f"{name} is `{value}`; it must be {_pattern_words(expected)}", description
    if keyword == "format":
        return f"{name} is `{value}`, not a valid {_FORMAT_WORDS.get(expected, expected)}", description
    return _explain_size(error, name), description


def _explain_size(error: Any, name: str) -> str:
    """Messages for the length, count and range keywords; jsonschema's own words for anything else."""
    keyword, limit, value = error.validator, error.validator_value, error.instance
    short = f"{name} must not be empty"
    messages = {
        "minLength": short if limit == 1 or value == "" else f"{name} must be at least {limit} characters",
        "maxLength": f"{name} is too long: at most {limit} characters",
        "minimum": f"{name} must be at least {limit}, not {_show(value)}",
        "maximum": f"{name} must be at most {limit}, not {_show(value)}",
        "exclusiveMinimum": f"{name} must be more than {limit}, not {_show(value)}",
        "exclusiveMaximum": f"{name} must be less than {limit}, not {_show(value)}",
        "minItems": f"{name} must list at least {_count(limit, 'item')}",
        "maxItems": f"{name} may list at most {_count(limit, 'item')}",
        "minProperties": short if limit == 1 else f"{name} needs {_count(limit, 'key')}",
        "maxProperties": f"{name} may have at most {_count(limit, 'key')}, not {_keys(value)}",
    }
    if keyword == "uniqueItems":
        index = _first_repeat(value)
        repeated = f" `{_show(value[index])}`" if index is not None else " an item"
        return f"{name} lists{repeated} more than once"
    return messages.get(keyword, f"{name}: {error.message}")


def _explain_alternatives(error: Any, name: str) -> str:
    """A oneOf/anyOf that no alternative fits by type."""
    kinds = [e.validator_value for e in error.context if e.validator == "type" and not e.relative_path]
    if kinds:
        return f"{name} must be {_expected_kinds(kinds)}, not {_kind(error.instance)}"
    return f"{name} matches more than one of its allowed forms"


def _type_hint(expected: Any, value: Any) -> str | None:
    wanted = expected if isinstance(expected, list) else [expected]
    if value is None:
        return "the value is empty: write one after the colon"
    if isinstance(value, str) and {"integer", "number", "boolean"} & set(wanted):
        return "write it without quotes"
    if "string" in wanted and isinstance(value, bool | int | float):
        return f"quote it if it is text: '{_show(value)}'"
    return None


def _name(path: Path) -> str:
    """A place in the document in plain words: `states.draft.on.submit.to`, `deadlines[0].within`."""
    if not path:
        return "the top level"
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return f"`{text}`"


def _container(path: Path) -> str:
    """Where a key is, as a phrase: "in state `draft`", "at the top level"."""
    match path:
        case ():
            return "at the top level"
        case ("states", str(state)):
            return f"in state `{state}`"
        case ("states", str(state), "on", str(event)):
            return f"in event `{event}` of state `{state}`"
        case ("states", str(state), "on", str(event), int(index)):
            return f"in alternative {index + 1} of event `{event}` of state `{state}`"
        case ("states", str(state), str(part)):
            return f"in the `{part}` of state `{state}`"
        case ("roles" | "users" | "departments" as group, str(item)):
            return f"in {group[:-1]} `{item}`"
        case _:
            return f"in {_name(path)}"


def _expected_kinds(expected: Any) -> str:
    wanted = expected if isinstance(expected, list) else [expected]
    words = list(dict.fromkeys(_KINDS.get(str(k), str(k)) for k in wanted))
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"`{_show(value)}`"
    if isinstance(value, int | float):
        return f"the number {_show(value)}"
    if isinstance(value, str):
        return f"the string `{value}`" if len(value) <= 40 else "a string"
    return "a list" if isinstance(value, list) else "a mapping"


def _show(value: Any) -> str:
    """A value as it would be written in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return str(value)


def _pattern_words(pattern: str) -> str:
    return _PATTERN_WORDS.get(pattern, f"text matching the pattern `{pattern}`")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _keys(value: Any) -> str:
    return ", ".join(f"`{k}`" for k in value) if isinstance(value, Mapping) else _show(value)


def _first_repeat(items: Iterable[Any]) -> int | None:
    """The index of the first item equal to an earlier one (JSON equality: 1 and true differ)."""
    seen: list[str] = []
    for index, item in enumerate(items):
        marker = json.dumps(item, sort_keys=True, default=str)
        if marker in seen:
            return index
        seen.append(marker)
    return None
