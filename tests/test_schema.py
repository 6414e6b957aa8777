"""Tests for the JSON Schema check: the shipped schemas themselves, and findings placed and worded so a
process owner can fix the file (the key's line and column, plain words, a did-you-mean hint)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from sopflow.engine.definition.loader import parse_yaml, read_yaml
from sopflow.engine.definition.schema import (
    SCHEMA_NAMES,
    check_definition_schema,
    check_org_schema,
    load_schema,
)
from sopflow.engine.errors import Problem

ROOT = pathlib.Path(__file__).resolve().parent.parent

GOOD = """\
# yaml-language-server: $schema=../schemas/definition.schema.json
id: content-review
version: 1
title: {zh: 内容审核, en: Content review}
description: Review before publishing.
source: "002 §三(一)1"
assumptions:
  - {zh: 四小时, en: four hours}
data:
  type: object
  properties:
    amount: {type: number}
initial: draft
states:
  draft:
    title: {zh: 草稿, en: Draft}
    owner: editor
    on:
      submit:
        to: check
        by: [editor, $starter]
        payload: {type: object, required: [comment]}
        set: {submitted: true}
        copy: {note: comment}
  check:
    title: {zh: 检查, en: Check}
    choice:
      - {when: data.amount > 10000, to: review}
      - else: publish
  review:
    title: {zh: 审核, en: Review}
    assign: {claim: reviewer}
    approval: {quorum: {role: reviewer, at_least: 2}, veto: false, approved: publish, rejected: draft}
    timeout: {after: 48h, fire: expire}
    on:
      expire:
        - {to: draft, when: data.amount > 5, explain: too late}
        - {to: draft}
  publish:
    title: {zh: 发布, en: Publish}
    final: true
deadlines:
  - name: publish-within-4h
    from: draft
    until: [publish]
    within: 4h
    calendar: working
    escalate: [{after: 1h, notify: lead}, {reassign: reviewer}]
"""

ORG = """\
id: acme
title: {zh: 公司, en: Acme}
departments:
  ops: {title: {zh: 运营, en: Operations}}
roles:
  editor: {title: {zh: 编辑, en: Editor}, department: ops, administrator: true}
users:
  amy: {name: Amy, roles: [editor], department: ops, email: amy@example.com}
calendar:
  timezone: Asia/Shanghai
  working_days: [mon, tue, wed, thu, fri]
  working_hours: ["09:00-12:00", "13:00-18:00"]
  holidays: [2026-10-01]
"""


def definition_problems(text: str) -> list[Problem]:
    return check_definition_schema(parse_yaml(text, "d.yaml"))


def org_problems(text: str) -> list[Problem]:
    return check_org_schema(parse_yaml(text, "org.yaml"))


def with_state(body: str) -> str:
    """A minimal definition whose one state `draft` has the given body (indented under it)."""
    lines = "".join(f"    {line}\n" for line in body.splitlines())
    return (
        "id: demo\nversion: 1\ntitle: {zh: 演示, en: Demo}\ninitial: draft\nstates:\n  draft:\n"
        "    title: {zh: 草稿, en: Draft}\n" + lines
    )


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [p.render() for p in problems]
    return problems[0]


def at(problem: Problem) -> tuple[str, int, int]:
    return problem.code, problem.line, problem.col


# ---------------------------------------------------------------- the schemas themselves


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_shipped_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def property_schemas(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (location, schema) under a `properties` keyword anywhere in a schema."""
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}/properties/{name}", sub
        for key, sub in node.items():
            yield from property_schemas(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from property_schemas(sub, f"{where}/{index}")


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_property_has_a_description(name: str) -> None:
    schema = load_schema(name)
    found = list(property_schemas(schema))
    assert len(found) > 20
    missing = []
    for where, sub in found:
        target = sub
        if "description" not in sub and "$ref" in sub:  # described where the reference points
            target = schema["$defs"][sub["$ref"].removeprefix("#/$defs/")]
        if not isinstance(target.get("description"), str) or not target["description"].strip():
            missing.append(where)
    assert missing == []


def test_load_schema_gives_a_fresh_copy_and_refuses_unknown_names() -> None:
    first = load_schema("definition")
    first["properties"].clear()
    assert "states" in load_schema("definition")["properties"]
    with pytest.raises(ValueError, match="unknown schema"):
        load_schema("nope")


# ---------------------------------------------------------------- valid files


def test_good_definition_has_no_problems() -> None:
    assert definition_problems(GOOD) == []


def test_good_org_has_no_problems() -> None:
    assert org_problems(ORG) == []


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "definitions").glob("*.yaml") if not p.name.endswith(".test.yaml")),
    ids=lambda p: p.name,
)
def test_shipped_definitions_pass_the_schema(path: pathlib.Path) -> None:
    doc = read_yaml(path)
    check = check_org_schema if path.name == "org.yaml" else check_definition_schema
    assert [p.render() for p in check(doc)] == []


# ---------------------------------------------------------------- unknown and missing keys


def test_unknown_key_at_the_key_with_did_you_mean() -> None:
    problem = only(definition_problems(with_state("onwer: editor")))
    assert at(problem) == ("unknown-key", 8, 5)
    assert problem.file == "d.yaml"
    assert problem.message == "unknown key `onwer` in state `draft`"
    assert problem.hint == "did you mean `owner`?"


def test_unknown_key_without_a_close_match_lists_the_allowed_keys() -> None:
    problem = only(definition_problems(GOOD + "colour: blue\n"))
    assert at(problem) == ("unknown-key", GOOD.count("\n") + 1, 1)
    assert problem.message == "unknown key `colour` at the top level"
    assert problem.hint is not None
    assert problem.hint.startswith("allowed keys here: `id`, `version`")


def test_unknown_key_in_a_transition_chosen_from_one_of() -> None:
    # `on.submit` is "a transition or a list of them": the mapping is judged as a transition,
    # not reported as "not valid under any of the given schemas".
    problems = definition_problems(with_state("on:\n  submit: {tto: done}"))
    assert [at(p) for p in problems] == [("missing-key", 9, 7), ("unknown-key", 9, 16)]
    missing, unknown = problems
    assert missing.message == "missing key `to` in event `submit` of state `draft`"
    assert missing.hint == "`to`: The state the case moves to."
    assert unknown.hint == "did you mean `to`?"
    assert all("any of the given schemas" not in p.message for p in problems)


def test_unknown_key_in_a_bilingual_text() -> None:
    problem = only(definition_problems(with_state("output: {zh: 稿件, fr: brouillon}")))
    assert at(problem) == ("unknown-key", 8, 22)
    assert problem.message == "unknown key `fr` in the `output` of state `draft`"
    assert problem.hint == "allowed keys here: `zh`, `en`"


def test_missing_top_level_key_points_at_the_document() -> None:
    text = GOOD.replace("initial: draft\n", "")
    problem = only(definition_problems(text))
    assert at(problem) == ("missing-key", 2, 1)
    assert problem.message == "missing key `initial` at the top level"
    assert problem.hint == "`initial`: The state a new case starts in."


def test_missing_english_title_points_at_the_title_key() -> None:
    problem = only(definition_problems(GOOD.replace("{zh: 检查, en: Check}", "{zh: 检查}")))
    assert at(problem) == ("missing-key", 26, 5)
    assert problem.message == "missing key `en` in the `title` of state `check`"


def test_approval_needs_exactly_one_rule() -> None:
    none = only(definition_problems(with_state("approval: {approved: a, rejected: b}")))
    assert at(none) == ("missing-key", 8, 5)
    assert none.message == "`states.draft.approval` needs `all_of`, `any_of` or `quorum`"
    both = "approval: {all_of: [a], any_of: [b], approved: a, rejected: b}"
    two = only(definition_problems(with_state(both)))
    assert at(two) == ("schema", 8, 5)
    assert "not more than one" in two.message


def test_choice_branch_needs_when_and_to_or_else() -> None:
    problem = only(definition_problems(with_state("choice:\n  - {to: a}\n  - else: b")))
    assert at(problem) == ("missing-key", 9, 9)
    assert problem.message == "`states.draft.choice[0]` needs `when` and `to`, or `else`"


# ---------------------------------------------------------------- wrong values


def test_quoted_number_is_a_wrong_type() -> None:
    problem = only(definition_problems(GOOD.replace("version: 1", 'version: "1"')))
    assert at(problem) == ("schema", 3, 10)
    assert problem.message == "`version` must be a whole number, not the string `1`"
    assert problem.hint == "write it without quotes"


def test_yes_stays_a_string_so_final_yes_is_wrong() -> None:
    problem = only(definition_problems(with_state("final: yes")))
    assert at(problem) == ("schema", 8, 12)
    assert problem.message == "`states.draft.final` must be true or false, not the string `yes`"


def test_empty_value_says_so() -> None:
    problem = only(definition_problems(with_state("on:\n  submit:\n    to:")))
    assert at(problem) == ("schema", 10, 9)  # at the key: the empty value has no text
    assert problem.message == "`states.draft.on.submit.to` must be a string, not empty"
    assert problem.hint is not None and "empty" in problem.hint


def test_text_of_the_wrong_type_names_both_forms() -> None:
    problem = only(definition_problems(with_state("instructions: 7")))
    assert at(problem) == ("schema", 8, 19)
    assert problem.message.startswith("`states.draft.instructions` must be a string or a mapping")
    assert problem.hint is not None and "zh" in problem.hint


def test_event_of_the_wrong_type() -> None:
    problem = only(definition_problems(with_state("on:\n  submit: done")))
    assert at(problem) == ("schema", 9, 15)
    assert "must be a mapping (key: value lines) or a list, not the string `done`" in problem.message


def test_pattern_in_plain_words_with_description() -> None:
    problem = only(definition_problems(GOOD.replace("id: content-review", "id: Content_Review")))
    assert at(problem) == ("schema", 2, 5)
    assert problem.message == (
        "`id` is `Content_Review`; it must be lower case letters, digits and hyphens, starting with a letter "
        "(like `content-review`)"
    )
    assert problem.hint is not None and problem.hint.startswith("The process's name")


def test_bad_state_name_points_at_the_key() -> None:
    problem = only(definition_problems(GOOD.replace("  publish:\n    title", "  Publish:\n    title")))
    assert at(problem) == ("schema", 39, 3)
    assert problem.message.startswith("the name `Publish` in `states` must be lower case letters")


def test_enum_with_did_you_mean() -> None:
    problem = only(definition_problems(GOOD.replace("calendar: working", "calendar: workng")))
    assert at(problem) == ("schema", 47, 15)
    assert problem.message == "`deadlines[0].calendar` must be one of `wall`, `working`, not `workng`"
    assert problem.hint == "did you mean `working`?"


def test_repeated_item_points_at_the_repeat() -> None:
    problem = only(definition_problems(GOOD.replace("by: [editor, $starter]", "by: [editor, editor]")))
    assert at(problem) == ("schema", 21, 22)
    assert problem.message == "`states.draft.on.submit.by` lists `editor` more than once"


def test_minimum_and_empty_string() -> None:
    text = GOOD.replace("version: 1", "version: 0").replace("within: 4h", 'within: ""')
    problems = definition_problems(text)
    assert [at(p) for p in problems] == [("schema", 3, 10), ("schema", 46, 13)]
    assert problems[0].message == "`version` must be at least 1, not 0"
    assert problems[1].message == "`deadlines[0].within` must not be empty"


def test_assign_with_two_ways() -> None:
    problem = only(definition_problems(with_state("assign: {claim: a, least_loaded: b}")))
    assert at(problem) == ("schema", 8, 13)
    assert problem.message == "`states.draft.assign` may have at most 1 key, not `claim`, `least_loaded`"


def test_top_level_must_be_a_mapping() -> None:
    problem = only(definition_problems("- a\n- b\n"))
    assert at(problem) == ("schema", 1, 1)
    assert problem.message == "the top level must be a mapping (key: value lines), not a list"


def test_every_error_is_reported_sorted_by_position() -> None:
    text = (
        GOOD.replace("version: 1", "version: one")
        .replace("owner: editor", "onwer: editor")
        .replace("calendar: working", "calendar: sometimes")
        .replace("final: true", "final: 1")
    )
    problems = definition_problems(text)
    assert [(p.code, p.line) for p in problems] == [
        ("schema", 3),
        ("unknown-key", 17),
        ("schema", 41),
        ("schema", 47),
    ]
    assert problems == sorted(problems, key=lambda p: (p.line, p.col))


def test_error_under_an_alias_points_at_the_alias() -> None:
    text = GOOD.replace("title: {zh: 检查, en: Check}", 'title: &t {zh: "", en: Check}')
    text = text.replace("title: {zh: 发布, en: Publish}", "title: *t")
    problems = definition_problems(text)
    # The anchored value has positions inside it; the alias only has its own.
    assert [at(p) for p in problems] == [("schema", 26, 20), ("schema", 40, 12)]
    assert problems[1].message == "`states.publish.title.zh` must not be empty"


# ---------------------------------------------------------------- the org schema


def test_org_unknown_user_key_with_did_you_mean() -> None:
    problem = only(org_problems(ORG.replace("email: amy@", "emial: amy@")))
    assert at(problem) == ("unknown-key", 8, 54)
    assert problem.message == "unknown key `emial` in user `amy`"
    assert problem.hint == "did you mean `email`?"


def test_org_bad_date_and_weekday() -> None:
    text = ORG.replace("holidays: [2026-10-01]", "holidays: [2026-13-01]").replace("fri]", "fry]")
    problems = org_problems(text)
    assert [at(p) for p in problems] == [("schema", 11, 38), ("schema", 13, 14)]
    assert problems[0].message.endswith("not `fry`")
    assert problems[0].hint == "did you mean `fri`?"
    assert problems[1].message == "`calendar.holidays[0]` is `2026-13-01`, not a valid date (YYYY-MM-DD)"


def test_org_missing_users() -> None:
    text = ORG.split("users:", maxsplit=1)[0]
    problem = only(org_problems(text))
    assert at(problem) == ("missing-key", 1, 1)
    assert problem.message == "missing key `users` at the top level"
