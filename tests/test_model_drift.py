"""The JSON Schema and the definition model describe the same language: every key the schema allows is
carried by a model field, and every model field comes from a key (or is derived, and listed as such).
Adding a key to one side without the other fails here."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sopflow.engine.definition import model
from sopflow.engine.definition.schema import load_schema

DERIVED = {
    "path", "name", "event", "source", "content_hash", "file", "rule", "kind", "action", "at_least", "share",
}
"""Model fields that are not a schema key of their own: places, names taken from mapping keys, hashes,
and what build.py derives from which key is present (an approval's rule, an escalation's action)."""

MAPPING: dict[str, tuple[type[Any], dict[str, str]]] = {
    "": (
        model.Definition,
        {
            "id": "id",
            "version": "version",
            "title": "title",
            "description": "description",
            "source": "rulebook",
            "assumptions": "assumptions",
            "data": "data_schema",
            "initial": "initial",
            "states": "states",
            "deadlines": "deadlines",
            "schedules": "schedules",
            "start": "start",
            "control": "control",
            "measures": "measures",
        },
    ),
    "start": (model.StartRule, {"by": "by", "when": "when", "explain": "explain"}),
    "state": (
        model.State,
        {
            "title": "title",
            "owner": "owner",
            "output": "output",
            "instructions": "instructions",
            "source": "rulebook",
            "final": "final",
            "on": "transitions",
            "choice": "choice",
            "approval": "approval",
            "assign": "assign",
            "timeout": "timeout",
            "subprocess": "subprocess",
            "parallel": "parallel",
            "automatic": "automatic",
        },
    ),
    "automatic": (
        model.Automatic,
        {
            "handler": "handler",
            "webhook": "webhook",
            "retries": "retries",
            "out": "out",
            "then": "then",
            "on_error": "on_error",
            "error_field": "error_field",
        },
    ),
    "parallel": (
        model.Parallel,
        {
            "branches": "branches",
            "join": "join",
            "then": "then",
            "for_each": "for_each",
            "branch": "template",
            "collect": "collect",
            "remaining": "remaining",
        },
    ),
    "parallelBranch": (model.ParallelBranch, {"title": "title", "initial": "initial", "states": "states"}),
    "subprocess": (
        model.Subprocess,
        {"definition": "definition", "in": "inputs", "out": "outputs", "on": "on"},
    ),
    "transition": (
        model.Transition,
        {
            "to": "target",
            "title": "title",
            "by": "by",
            "when": "when",
            "explain": "explain",
            "payload": "payload",
            "set": "set",
            "copy": "copy",
            "source": "rulebook",
            "not_by": "not_by",
            "compute": "compute",
            "reenter": "reenter",
        },
    ),
    "approval": (
        model.Approval,
        {
            "all_of": "roles",
            "any_of": "roles",
            "quorum": "roles",
            "veto": "veto",
            "submitter_may_approve": "submitter_may_approve",
            "approved": "approved",
            "rejected": "rejected",
            "not_by": "not_by",
            "payload": "payload",
            "set": "set",
            "copy": "copy",
            "compute": "compute",
        },
    ),
    "branch": (model.Branch, {"when": "when", "to": "target", "else": "target"}),
    "assign": (
        model.Assignment,
        {
            "from_data": "value",
            "least_loaded": "value",
            "claim": "value",
            "fired_by": "value",
            "not_by": "not_by",
            "round_robin": "value",
        },
    ),
    "timeout": (model.Timeout, {"after": "after_seconds", "fire": "fire", "notify": "notify"}),
    "schedule": (
        model.Schedule,
        {
            "title": "title",
            "cron": "cron",
            "working_day": "working_day",
            "data": "data",
            "period_field": "period_field",
            "source": "rulebook",
            "period_format": "period_format",
        },
    ),
    "deadline": (
        model.Deadline,
        {
            "name": "name",
            "title": "title",
            "from": "start",
            "until": "until",
            "within": "within_seconds",
            "calendar": "calendar",
            "escalate": "escalate",
            "source": "rulebook",
            "restart": "restart",
            "branch": "branch",
        },
    ),
    "escalation": (
        model.Escalation,
        {
            "after": "after_seconds",
            "notify": "target",
            "reassign": "target",
            "fire": "target",
            "from": "counted_from",
        },
    ),
}


@pytest.mark.parametrize("where", list(MAPPING), ids=lambda w: w or "definition")
def test_schema_keys_and_model_fields_match(where: str) -> None:
    schema = load_schema("definition")
    node = schema if not where else schema["$defs"][where]
    keys = set(node["properties"])
    cls, mapping = MAPPING[where]
    fields = {f.name for f in dataclasses.fields(cls)}
    assert keys == set(mapping), (
        f"schema keys of {where or 'definition'} changed: update the model and MAPPING"
    )
    assert set(mapping.values()) <= fields
    assert fields - DERIVED <= set(mapping.values()), f"model fields of {cls.__name__} without a schema key"


def test_quorum_fields_are_the_schema_ones() -> None:
    quorum = load_schema("definition")["$defs"]["approval"]["properties"]["quorum"]
    assert set(quorum["properties"]) == {"role", "at_least"}
    assert "at_least" in {f.name for f in dataclasses.fields(model.Approval)}


def test_org_schema_and_model_match() -> None:
    org = load_schema("org")
    role_keys = set(org["properties"]["roles"]["additionalProperties"]["properties"])
    user_keys = set(org["properties"]["users"]["additionalProperties"]["properties"])
    calendar_keys = set(org["properties"]["calendar"]["properties"])
    assert role_keys - {"source"} <= {f.name for f in dataclasses.fields(model.Role)}
    assert user_keys <= {f.name for f in dataclasses.fields(model.User)}
    assert calendar_keys == {f.name for f in dataclasses.fields(model.WorkingCalendar)}
