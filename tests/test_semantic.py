"""Tests for building the model, the meaning checks and validation of files and folders.

The bad-definition corpus lives in tests/bad/: one small broken file per check, each starting with
`# expect: <code> <line>:<col>` lines naming exactly the problems validation must report.
"""

from __future__ import annotations

import pathlib
import re
import shutil
from types import MappingProxyType

import pytest

from sopflow.engine.definition.build import (
    build_definition,
    build_org,
    build_text,
    content_hash,
    parse_duration,
)
from sopflow.engine.definition.loader import parse_yaml
from sopflow.engine.definition.model import Definition, Org, Text
from sopflow.engine.definition.semantic import ORG_CODES, SEMANTIC_CODES, check_definition
from sopflow.engine.definition.validate import load_definition_file, load_org_file, validate_paths
from sopflow.engine.errors import DefinitionError, UsageError

BAD = pathlib.Path(__file__).parent / "bad"
SHARED_ORG = BAD / "org.yaml"
EXPECT = re.compile(r"# expect: ([a-z-]+) (\d+):(\d+)$")
GUARD_CODES = ("bad-guard", "unknown-field")
"""The expression module's codes the corpus shows passing through (there may be more)."""

GOOD = """\
# yaml-language-server: $schema=../schemas/definition.schema.json
id: content-review
version: 3
title: {zh: 内容审核, en: Content review}
description: 审核一篇稿件
source: "002 §三(一)1"
assumptions:
  - The rulebook sets no limit for review; we chose 4h.
data:
  type: object
  properties:
    amount: {type: integer}
    published: {type: boolean}
    reason: {type: string}
initial: draft
states:
  draft:
    title: {zh: 草稿, en: Draft}
    owner: editor
    on:
      submit: {to: route, title: {zh: 提交, en: Submit}}
  route:
    title: {zh: 分流, en: Route}
    choice:
      - when: data.amount > 100
        to: committee_vote
      - else: review
  review:
    title: {zh: 审核, en: Review}
    owner: reviewer
    assign: {claim: reviewer}
    timeout: {after: 1h30m, fire: expire}
    on:
      accept:
        - to: done
          by: [$assignee]
          when: data.amount > 0
          payload: &comment
            type: object
            properties:
              comment: {type: string}
          copy: {reason: comment}
          set: {published: true}
        - to: draft
          by: [$assignee]
          payload: *comment
      expire: {to: draft}
  committee_vote:
    title: {zh: 委员会表决, en: Committee vote}
    owner: committee
    approval:
      quorum: {role: committee, at_least: 2}
      approved: done
      rejected: draft
      veto: false
  done:
    title: {zh: 完成, en: Done}
    final: true
deadlines:
  - name: publish-within-4h
    from: draft
    until: done
    within: 4h
    calendar: working
    escalate:
      - notify: admin
      - after: 1h
        reassign: reviewer
"""


def _build(text: str, file: str = "good.yaml") -> Definition:
    return build_definition(parse_yaml(text, file))


def _org() -> Org:
    return build_org(parse_yaml(SHARED_ORG.read_text(encoding="utf-8"), str(SHARED_ORG)))


def _expected(path: pathlib.Path) -> set[tuple[str, int, int]]:
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = EXPECT.match(line)
        if match:
            found.add((match[1], int(match[2]), int(match[3])))
    return found


CORPUS = sorted(p for p in BAD.glob("*.yaml") if p.name != SHARED_ORG.name)


# --- the bad-definition corpus ---------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_file_reports_exactly_what_it_expects(path: pathlib.Path) -> None:
    expected = _expected(path)
    assert expected, f"{path.name} has no `# expect:` line"
    # A definition alone picks up tests/bad/org.yaml beside it; an org file is the org itself.
    report = validate_paths([path])
    assert {(p.code, p.line, p.col) for p in report.problems} == expected
    assert all(p.file == str(path) for p in report.problems)


def test_corpus_covers_every_code() -> None:
    covered = {code for path in CORPUS for code, _, _ in _expected(path)}
    missing = set(SEMANTIC_CODES) | set(ORG_CODES) | set(GUARD_CODES)
    assert missing - covered == set()


def test_corpus_file_names_match_their_codes() -> None:
    for path in CORPUS:
        code = path.stem.rsplit("-", 1)[0]
        assert code in {c for c, _, _ in _expected(path)}, path.name


def test_the_shared_org_is_clean() -> None:
    report = validate_paths([SHARED_ORG])
    assert report.problems == ()
    assert report.org is not None and report.org.id == "test-org"


def test_unknown_names_get_a_did_you_mean_hint() -> None:
    report = validate_paths([BAD / "unknown-state-1.yaml"])
    (problem,) = report.problems
    assert problem.hint == "did you mean `manual_review`?"
    assert "manual_reviw" in problem.message


def test_bad_duration_hint_shows_the_format() -> None:
    (problem,) = validate_paths([BAD / "bad-duration-1.yaml"]).problems
    assert problem.hint == "write durations like 4h, 30m, 1h30m, 2d"


def test_warnings_do_not_make_a_report_fail() -> None:
    report = validate_paths([BAD / "no-owner-1.yaml"])
    assert [p.severity for p in report.problems] == ["warning"]
    assert report.ok
    assert [d.id for d in report.definitions] == ["no-owner-one"]


def test_role_checks_need_an_org() -> None:
    text = (BAD / "unknown-role-1.yaml").read_text(encoding="utf-8")
    doc = parse_yaml(text, "x.yaml")
    defn = build_definition(doc)
    assert check_definition(defn, doc, None) == []
    assert [p.code for p in check_definition(defn, doc, _org())] == ["unknown-role"]


def test_the_good_definition_has_no_problems() -> None:
    doc = parse_yaml(GOOD, "good.yaml")
    assert check_definition(build_definition(doc), doc, _org()) == []


def test_several_problems_in_one_file_are_all_reported_in_order() -> None:
    text = GOOD.replace("to: committee_vote", "to: comittee_vote").replace("after: 1h30m", "after: 90")
    doc = parse_yaml(text, "two.yaml")
    problems = check_definition(build_definition(doc), doc, _org())
    assert [p.code for p in problems] == ["unknown-state", "bad-duration"]
    assert problems[0].line < problems[1].line


def test_system_fired_events_need_no_actor() -> None:
    # `expire` is fired only by the timeout; the state has no owner, so it has no `by` either.
    text = GOOD.replace("    owner: reviewer\n    assign", "    assign").replace(
        "- to: draft\n          by: [$assignee]", "- to: draft\n          by: [reviewer]"
    )
    doc = parse_yaml(text, "t.yaml")
    codes = [p.code for p in check_definition(build_definition(doc), doc, _org())]
    assert codes == ["no-owner"]


def _problems(text: str) -> list[tuple[str, int, int]]:
    doc = parse_yaml(text, "t.yaml")
    return [(p.code, p.line, p.col) for p in check_definition(build_definition(doc), doc, _org())]


def _codes(text: str) -> list[str]:
    return [code for code, _, _ in _problems(text)]


# --- embedded JSON Schemas -------------------------------------------------------------------------


def test_property_names_are_not_mistaken_for_schema_keywords() -> None:
    text = GOOD.replace(
        "    reason: {type: string}\n", "    reason: {type: string}\n    requried: {type: string}\n"
    )
    assert _codes(text) == []


def test_unknown_schema_keywords_are_found_in_every_kind_of_subschema() -> None:
    text = GOOD.replace(
        "    reason: {type: string}\n",
        "    reason: {type: string}\n"
        "    tags: {type: array, items: {type: string, maxLenght: 9}}\n"
        "    kind: {anyOf: [{const: a}, {cnst: b}]}\n"
        "    extra: {type: object, additionalProperties: {tpye: string}}\n"
        "    ref: {$ref: '#/$defs/code'}\n"
        "  $defs:\n"
        "    code: {type: string, patern: '^[A-Z]+$'}\n"
        "  definitions: {}\n",
    )
    doc = parse_yaml(text, "t.yaml")
    found = [
        p for p in check_definition(build_definition(doc), doc, _org()) if p.code == "unknown-schema-keyword"
    ]
    assert [p.message.split("`")[1] for p in found] == ["maxLenght", "cnst", "tpye", "patern", "definitions"]
    assert all(p.severity == "warning" for p in found)
    assert found[0].hint == "did you mean `maxLength`?"
    assert found[-1].hint is not None and "`$defs`" in found[-1].hint


def test_a_bad_type_in_a_list_points_at_the_item() -> None:
    text = GOOD.replace("amount: {type: integer}", "amount: {type: [integer, nul]}")
    doc = parse_yaml(text, "t.yaml")
    (problem,) = check_definition(build_definition(doc), doc, _org())
    assert (problem.code, problem.line, problem.col) == ("bad-data-schema", 12, 30)
    assert problem.hint == "did you mean `null`?"


def test_a_list_for_items_suggests_prefix_items() -> None:
    text = GOOD.replace("amount: {type: integer}", "amount: {type: array, items: [{type: integer}]}")
    doc = parse_yaml(text, "t.yaml")
    (problem,) = check_definition(build_definition(doc), doc, _org())
    assert problem.code == "bad-data-schema"
    assert problem.message.endswith("`items` must be a mapping (a schema) or true or false, not a list")
    assert problem.hint is not None and "prefixItems" in problem.hint


# --- choices, alternatives, timers, deadlines, approvals --------------------------------------------


def test_a_choice_may_read_a_data_field_called_payload() -> None:
    text = GOOD.replace(
        "    reason: {type: string}\n", "    reason: {type: string}\n    payload: {type: integer}\n"
    )
    assert _codes(text.replace("when: data.amount > 100", "when: data.payload > 100")) == []
    assert _codes(text.replace("when: data.amount > 100", "when: has(payload.amount)")) == [
        "payload-in-choice"
    ]


ALTERNATIVES = GOOD.replace(
    "        - to: draft\n          by: [$assignee]\n          payload: *comment\n",
    "        - to: draft\n          by: [OTHER]\n",
).replace(
    "by: [$assignee]\n          when: data.amount > 0", "by: [committee]\n          when: data.amount > 0"
)


def test_alternatives_for_different_people_may_declare_different_payloads() -> None:
    assert _codes(ALTERNATIVES.replace("OTHER", "editor")) == []  # no committee member is an editor
    assert _codes(ALTERNATIVES.replace("OTHER", "admin")) == ["alternatives-differ"]  # cat is both
    assert _codes(ALTERNATIVES.replace("OTHER", "$starter")) == ["alternatives-differ"]


def test_a_timed_event_with_an_unguarded_alternative_is_not_warned() -> None:
    guarded = GOOD.replace("expire: {to: draft}", "expire: {to: draft, when: data.amount > 0}")
    assert _problems(guarded) == [("timed-event-guard", 47, 27)]  # at `when`
    fallback = GOOD.replace(
        "expire: {to: draft}", "expire:\n        - {to: draft, when: data.amount > 0}\n        - {to: draft}"
    )
    assert _codes(fallback) == []


def test_a_deadline_ending_in_every_final_state_is_quiet() -> None:
    text = (BAD / "deadline-outlives-case-1.yaml").read_text(encoding="utf-8")
    assert _codes(text) == ["deadline-outlives-case"]
    assert _codes(text.replace("until: done", "until: [done, refused]")) == []


def test_a_submitter_allowed_to_vote_needs_no_extra_member() -> None:
    text = (BAD / "quorum-needs-submitter-1.yaml").read_text(encoding="utf-8")
    assert _codes(text) == ["quorum-needs-submitter"]
    assert (
        _codes(
            text.replace(
                "      rejected: draft\n", "      rejected: draft\n      submitter_may_approve: true\n"
            )
        )
        == []
    )
    assert _codes(text.replace("owner: committee\n    on:", "owner: editor\n    on:")) == []  # ann submits


def test_the_last_voter_of_an_earlier_approval_is_the_submitter() -> None:
    # Either committee member may cast the deciding vote of the first check and so become the submitter of
    # the joint approval; without bob, cat alone cannot fill both slots, without cat nobody is admin.
    text = GOOD.replace(
        "      quorum: {role: committee, at_least: 2}\n      approved: done",
        "      any_of: [committee]\n      approved: joint",
    ).replace(
        "  done:\n",
        "  joint:\n    title: {zh: 联合, en: Joint}\n    owner: admin\n"
        "    approval: {all_of: [committee, admin], approved: done, rejected: draft}\n  done:\n",
    )
    doc = parse_yaml(text, "t.yaml")
    (problem,) = check_definition(build_definition(doc), doc, _org())
    assert problem.code == "quorum-needs-submitter"
    assert problem.message.startswith("if `bob` moves a case into `joint`")


# --- build -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4h", 14400),
        ("30m", 1800),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("45s", 45),
        ("1w2d3h4m5s", 788645),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["4x", "h", "30m1h", "1.5h", "-1h", "4 h 3", "", "4H"])
def test_parse_duration_refuses_malformed(text: str) -> None:
    assert parse_duration(text) is None


def test_a_malformed_duration_builds_as_zero() -> None:
    defn = _build(GOOD.replace("within: 4h", "within: soon"))
    assert defn.deadlines[0].within_seconds == 0


def test_texts() -> None:
    assert build_text("Review the draft") == Text(en="Review the draft")
    assert build_text("审核稿件") == Text(zh="审核稿件")
    assert build_text("审核 draft") == Text(zh="审核 draft")
    assert build_text({"zh": "完成", "en": "Done"}) == Text(zh="完成", en="Done")
    defn = _build(GOOD)
    assert defn.description == Text(zh="审核一篇稿件")
    assert defn.assumptions == (Text(en="The rulebook sets no limit for review; we chose 4h."),)
    assert defn.title == Text(zh="内容审核", en="Content review")


def test_build_definition_fields() -> None:
    defn = _build(GOOD)
    assert (defn.id, defn.version, defn.initial, defn.file) == ("content-review", 3, "draft", "good.yaml")
    assert defn.rulebook == "002 §三(一)1"
    assert list(defn.states) == ["draft", "route", "review", "committee_vote", "done"]
    assert defn.final_states == ("done",)
    assert defn.data_schema["properties"]["amount"] == {"type": "integer"}


def test_transitions_by_default_and_paths() -> None:
    states = _build(GOOD).states
    (submit,) = states["draft"].transitions
    assert (submit.event, submit.source, submit.target) == ("submit", "draft", "route")
    assert submit.by == ("editor",)  # the state's owner
    assert submit.path == ("states", "draft", "on", "submit")
    assert submit.title == Text(zh="提交", en="Submit")
    accept_done, accept_back, expire = states["review"].transitions
    assert accept_done.path == ("states", "review", "on", "accept", 0)
    assert accept_back.path == ("states", "review", "on", "accept", 1)
    assert accept_done.by == ("$assignee",)
    assert accept_done.when is not None and accept_done.when.text == "data.amount > 0"
    assert accept_done.when.path == ("states", "review", "on", "accept", 0, "when")
    assert dict(accept_done.copy) == {"reason": "comment"}
    assert dict(accept_done.set) == {"published": True}
    assert accept_back.when is None
    assert expire.by == ("reviewer",)


def test_no_owner_means_no_default_actor() -> None:
    defn = _build(GOOD.replace("    owner: editor\n", ""))
    assert defn.states["draft"].transitions[0].by == ()


def test_choice_approval_assign_timeout() -> None:
    states = _build(GOOD).states
    when, other = states["route"].choice
    assert (when.target, other.target, other.when) == ("committee_vote", "review", None)
    assert other.path == ("states", "route", "choice", 1)
    approval = states["committee_vote"].approval
    assert approval is not None
    assert (approval.rule, approval.roles, approval.at_least) == ("quorum", ("committee",), 2)
    assert (approval.approved, approval.rejected, approval.veto) == ("done", "draft", False)
    assert approval.submitter_may_approve is False
    review = states["review"]
    assert review.assign is not None and (review.assign.kind, review.assign.value) == ("claim", "reviewer")
    assert review.timeout is not None
    assert (review.timeout.after_seconds, review.timeout.fire) == (5400, "expire")


def test_deadlines_and_escalation_defaults() -> None:
    (deadline,) = _build(GOOD).deadlines
    assert (deadline.start, deadline.until, deadline.within_seconds) == ("draft", ("done",), 14400)
    assert deadline.calendar == "working"
    notify, reassign = deadline.escalate
    assert (notify.after_seconds, notify.action, notify.target) == (0, "notify", "admin")
    assert (reassign.after_seconds, reassign.action, reassign.target) == (3600, "reassign", "reviewer")
    assert reassign.path == ("deadlines", 0, "escalate", 1)


def test_built_data_is_read_only() -> None:
    defn = _build(GOOD)
    assert isinstance(defn.data_schema, MappingProxyType)
    payload = defn.states["review"].transitions[0].payload
    assert payload is not None
    with pytest.raises(TypeError):
        payload["type"] = "array"  # type: ignore[index]


def test_content_hash_ignores_comments_and_layout() -> None:
    relaid = "# a comment\n" + GOOD.replace(
        "title: {zh: 内容审核, en: Content review}", "title:\n  en: Content review   # note\n  zh: 内容审核"
    )
    assert _build(relaid).content_hash == _build(GOOD).content_hash


def test_content_hash_changes_with_content() -> None:
    changed = GOOD.replace("within: 4h", "within: 5h")
    assert _build(changed).content_hash != _build(GOOD).content_hash
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert len(_build(GOOD).content_hash) == 64


def test_build_org() -> None:
    org = _org()
    assert list(org.roles) == ["editor", "reviewer", "committee", "admin"]
    assert org.roles["reviewer"].manager == "admin"
    assert org.roles["admin"].administrator
    assert org.users["ann"].roles == ("editor", "reviewer")
    assert org.members("committee") == ("bob", "cat")
    assert org.departments["ops"] == Text(zh="运营部", en="Operations")
    assert org.calendar.timezone == "Asia/Shanghai"
    assert org.calendar.working_days == (0, 1, 2, 3, 4)
    assert org.calendar.working_hours == ((540, 720), (780, 1080))
    assert org.users["ann"].path == ("users", "ann")


def test_org_calendar_weekdays_and_defaults() -> None:
    text = SHARED_ORG.read_text(encoding="utf-8").replace("[mon, tue, wed, thu, fri]", "[sat, sun]")
    assert build_org(parse_yaml(text, "o.yaml")).calendar.working_days == (5, 6)
    bare = (
        "id: o\ntitle: {zh: 组织, en: Org}\n"
        "roles: {a: {title: {zh: 甲, en: A}}}\nusers: {u: {name: U, roles: [a]}}\n"
    )
    calendar = build_org(parse_yaml(bare, "o.yaml")).calendar
    assert (calendar.timezone, calendar.working_days, calendar.working_hours) == (
        "UTC",
        (0, 1, 2, 3, 4),
        ((540, 1080),),
    )


# --- validate ------------------------------------------------------------------------------------


def _write(folder: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_validate_a_folder_reports_every_file_together(tmp_path: pathlib.Path) -> None:
    shutil.copy(SHARED_ORG, tmp_path / "org.yaml")
    _write(tmp_path, "good.yaml", GOOD)
    shutil.copy(BAD / "unknown-state-2.yaml", tmp_path / "a.yaml")
    shutil.copy(BAD / "cannot-finish-1.yaml", tmp_path / "b.yml")
    _write(tmp_path, "notes.txt", "not yaml")
    report = validate_paths([tmp_path])
    assert [(pathlib.Path(p.file).name, p.code) for p in report.problems] == [
        ("a.yaml", "unknown-state"),
        ("b.yml", "cannot-finish"),
    ]
    assert not report.ok
    assert [d.id for d in report.definitions] == ["content-review"]
    assert report.org is not None and report.org.id == "test-org"


def test_validate_sorts_by_file_line_col(tmp_path: pathlib.Path) -> None:
    shutil.copy(SHARED_ORG, tmp_path / "org.yaml")
    _write(tmp_path, "z.yaml", GOOD.replace("to: route", "to: rout").replace("within: 4h", "within: 4x"))
    other = GOOD.replace("owner: editor", "owner: editr").replace("id: content-review", "id: a")
    _write(tmp_path, "a.yaml", other)
    report = validate_paths([tmp_path / "z.yaml", tmp_path / "a.yaml"])
    keys = [(p.file, p.line, p.col) for p in report.problems]
    assert keys == sorted(keys)
    assert [p.code for p in report.problems] == ["unknown-role", "unknown-state", "bad-duration"]


def test_validate_continues_past_unreadable_yaml(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, "broken.yaml", "id: x\n  title: [\n")
    _write(tmp_path, "good.yaml", GOOD)
    shutil.copy(SHARED_ORG, tmp_path / "org.yaml")
    report = validate_paths([tmp_path])
    assert [pathlib.Path(p.file).name for p in report.problems] == ["broken.yaml"]
    assert report.problems[0].code.startswith("yaml")
    assert [d.id for d in report.definitions] == ["content-review"]


def test_schema_errors_skip_build_and_semantics(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "bad.yaml", GOOD.replace("version: 3", "version: three"))
    report = validate_paths([path, SHARED_ORG])
    assert report.problems and not report.ok
    assert report.definitions == ()


def test_duplicate_definition_across_files(tmp_path: pathlib.Path) -> None:
    first = _write(tmp_path, "a.yaml", GOOD)
    second = _write(tmp_path, "b.yaml", "# the same process again\n" + GOOD)
    report = validate_paths([first, second, SHARED_ORG])
    (problem,) = report.problems
    assert (problem.code, problem.file, problem.line) == ("duplicate-definition", str(second), 4)
    assert str(first) in problem.message
    assert not report.ok
    bumped = _write(tmp_path, "b.yaml", GOOD.replace("version: 3", "version: 4"))
    assert validate_paths([first, bumped, SHARED_ORG]).ok


def test_org_found_beside_the_definitions(tmp_path: pathlib.Path) -> None:
    shutil.copy(SHARED_ORG, tmp_path / "org.yaml")
    path = _write(tmp_path, "good.yaml", GOOD.replace("owner: editor", "owner: ghost"))
    report = validate_paths([path])
    assert report.org is not None
    assert [p.code for p in report.problems] == ["unknown-role"]


def test_org_problems_reported_with_the_definitions(tmp_path: pathlib.Path) -> None:
    shutil.copy(BAD / "unknown-role-2.yaml", tmp_path / "org.yaml")
    _write(tmp_path, "good.yaml", GOOD)
    report = validate_paths([tmp_path])
    assert ("org.yaml", "unknown-role") in [(pathlib.Path(p.file).name, p.code) for p in report.problems]


def test_without_any_org_roles_are_not_checked(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "good.yaml", GOOD.replace("owner: editor", "owner: ghost"))
    report = validate_paths([path])
    assert report.org is None
    assert report.ok and report.problems == ()


def test_usage_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(UsageError):
        validate_paths([tmp_path / "missing.yaml"])
    with pytest.raises(UsageError):
        validate_paths([tmp_path])  # a folder with no yaml
    with pytest.raises(UsageError):
        validate_paths([])
    assert UsageError("x").exit_code == 2


def test_load_definition_file(tmp_path: pathlib.Path) -> None:
    good = _write(tmp_path, "good.yaml", GOOD)
    assert load_definition_file(good, _org()).key == "content-review@3"
    warned = _write(tmp_path, "warned.yaml", GOOD.replace("    owner: reviewer\n    assign", "    assign"))
    assert load_definition_file(warned, _org()).id == "content-review"
    with pytest.raises(DefinitionError) as caught:
        load_definition_file(BAD / "cannot-finish-1.yaml")
    assert [p.code for p in caught.value.problems] == ["cannot-finish"]
    with pytest.raises(DefinitionError):
        load_definition_file(_write(tmp_path, "broken.yaml", "id: [\n"))


def test_load_org_file() -> None:
    assert load_org_file(SHARED_ORG).id == "test-org"
    assert load_org_file(BAD / "no-administrator-1.yaml").id == "no-administrator-org"  # a warning only
    with pytest.raises(DefinitionError) as caught:
        load_org_file(BAD / "unknown-department-1.yaml")
    assert [p.code for p in caught.value.problems] == ["unknown-department"]
