"""Checks of the data classification (`x-sensitive: CLASS` in the data and payload schemas): a class that
is not one of `engine.privacy.CLASSES` is an error; a data field whose name looks personal (a phone, an ID
number, an address, an age, a person's name) and is not marked is a warning, since an export would then
carry it as it is."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sopflow.engine.definition.model import USER_FORMAT, Path, thawed_json
from sopflow.engine.definition.semantic.context import Context, did_you_mean
from sopflow.engine.errors import Problem
from sopflow.engine.privacy import CLASSES, KEYWORD, looks_personal

CODES = ("unknown-sensitive-class", "unmarked-personal-field")


def check_privacy(ctx: Context) -> Iterator[Problem]:
    if ctx.raw(("data",)) is not None:
        yield from _walk(ctx, thawed_json(ctx.defn.data_schema), ("data",), data=True)
    for s in ctx.defn.all_states():
        for t in s.transitions:
            if t.payload is not None:
                yield from _walk(ctx, thawed_json(t.payload), (*t.path, "payload"), data=False)


def _walk(ctx: Context, schema: Any, path: Path, *, data: bool) -> Iterator[Problem]:
    if not isinstance(schema, Mapping):
        return
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue
        here: Path = (*path, "properties", name)
        yield from _field(ctx, str(name), sub, here, data=data)
        yield from _walk(ctx, sub, here, data=data)
        items = sub.get("items")
        if isinstance(items, Mapping):
            if KEYWORD in items:
                yield from _class(ctx, items[KEYWORD], (*here, "items", KEYWORD))
            yield from _walk(ctx, items, (*here, "items"), data=data)


def _field(ctx: Context, name: str, sub: Mapping[str, Any], here: Path, *, data: bool) -> Iterator[Problem]:
    if KEYWORD in sub:
        yield from _class(ctx, sub[KEYWORD], (*here, KEYWORD))
        return
    guess = looks_personal(name)
    if not data or guess is None or sub.get("format") == USER_FORMAT:
        return  # a `format: user` field names a member of the org, who appears in exports as a token
    items = sub.get("items")
    if isinstance(items, Mapping) and KEYWORD in items:
        return
    yield ctx.problem(
        here,
        "unmarked-personal-field",
        f"data field `{name}` looks like personal data and is not marked: an export would carry it as it is",
        f"mark it `{KEYWORD}: {guess}` (one of {', '.join(CLASSES)}) so that exports desensitise it",
        key=True,
        severity="warning",
    )


def _class(ctx: Context, value: Any, path: Path) -> Iterator[Problem]:
    if isinstance(value, str) and value in CLASSES:
        return
    shown = value if isinstance(value, str) else repr(value)
    yield ctx.problem(
        path,
        "unknown-sensitive-class",
        f"`{KEYWORD}: {shown}` is not a class of sensitive data",
        (did_you_mean(str(value), CLASSES) if isinstance(value, str) else None)
        or f"use one of {', '.join(CLASSES)}",
    )
