"""Tests for the guard language: what compile_guard rejects, and what Guard.evaluate decides or refuses."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sopflow.engine.definition import expressions
from sopflow.engine.definition.expressions import ExpressionIssue, ExpressionRejected, Guard, compile_guard
from sopflow.engine.errors import GuardRefused

ROOT = Path(__file__).resolve().parents[1]

DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "amount": {"type": "number"},
        "count": {"type": "integer"},
        "dept": {"type": "string"},
        "title": {"type": "string"},
        "code": {"type": "string", "maxLength": 16},
        "tags": {"type": "array", "items": {"type": "string"}},
        "items": {"type": "array", "items": {"type": "object"}},
        "urgent": {"type": "boolean"},
        "a": {"type": "integer"},
        "b": {"type": "integer"},
        "applicant": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "grade": {"type": "integer"}},
        },
    },
}
PAYLOAD_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"comment": {"type": "string"}}}
ACTOR = {"id": "li.wei", "roles": ["ops_lead", "reviewer"], "department": "ops"}


def rejected(text: str, **schemas: Any) -> tuple[ExpressionIssue, ...]:
    with pytest.raises(ExpressionRejected) as caught:
        compile_guard(text, **schemas)
    return caught.value.issues


def codes(text: str, **schemas: Any) -> list[str]:
    return [issue.code for issue in rejected(text, **schemas)]


def run(text: str, data: dict[str, Any], payload: dict[str, Any] | None = None) -> bool:
    guard = compile_guard(text, data_schema=DATA_SCHEMA, payload_schema=PAYLOAD_SCHEMA)
    return guard.evaluate(data=data, payload=payload or {}, actor=ACTOR)


# --- syntax and names -------------------------------------------------------------------------------------


def test_syntax_error_is_one_line_with_the_column() -> None:
    (issue,) = rejected("data.amount > ")
    assert issue.code == "bad-guard"
    assert "column 15" in issue.message
    assert "\n" not in issue.message
    assert issue.hint


def test_syntax_error_in_the_middle_names_its_column() -> None:
    (issue,) = rejected("data.amount >> 1")
    assert issue.code == "bad-guard"
    assert "column 14" in issue.message


def test_unknown_name_is_rejected_with_did_you_mean() -> None:
    (issue,) = rejected("dta.amount > 1")
    assert issue.code == "unknown-name"
    assert "`dta`" in issue.message
    assert issue.hint == "did you mean `data`?"


def test_python_import_is_an_unknown_name_at_compile_time() -> None:
    (issue,) = rejected('__import__("os")')
    assert issue.code == "unknown-name"
    assert "__import__" in issue.message


def test_functions_this_cel_lacks_are_rejected_at_compile_time() -> None:
    (issue,) = rejected('data.dept.lowerAscii() == "ops"', data_schema=DATA_SCHEMA)
    assert issue.code == "unknown-name"
    assert "lowerAscii" in issue.message


def test_comprehension_variable_is_known_only_inside_its_comprehension() -> None:
    compile_guard("data.tags.all(t, t != '')")
    (issue,) = rejected("data.tags.all(t, t != '') && t == 'x'")
    assert issue.code == "unknown-name"
    assert "only inside" in (issue.hint or "")


def test_a_comprehension_variable_may_not_hide_data() -> None:
    assert codes("data.tags.all(data, data != '')") == ["bad-guard"]


# --- fields -----------------------------------------------------------------------------------------------


def test_unknown_data_field_has_did_you_mean_hint() -> None:
    (issue,) = rejected("data.amout > 10000", data_schema=DATA_SCHEMA)
    assert issue.code == "unknown-field"
    assert "`data.amout`" in issue.message
    assert issue.hint == "did you mean `data.amount`?"


def test_unknown_field_without_a_close_match_lists_the_fields() -> None:
    (issue,) = rejected("data.zzzzzz > 1", data_schema=DATA_SCHEMA)
    assert issue.hint is not None and "amount" in issue.hint and "dept" in issue.hint


def test_nested_fields_follow_the_schema() -> None:
    compile_guard('data.applicant.name == "x"', data_schema=DATA_SCHEMA)
    (issue,) = rejected("data.applicant.grad > 3", data_schema=DATA_SCHEMA)
    assert issue.code == "unknown-field"
    assert issue.hint == "did you mean `data.applicant.grade`?"


def test_has_is_checked_too() -> None:
    assert codes("has(data.amout)", data_schema=DATA_SCHEMA) == ["unknown-field"]


def test_index_by_string_is_a_field_too() -> None:
    assert codes('data["amout"] > 1', data_schema=DATA_SCHEMA) == ["unknown-field"]


def test_payload_fields_are_checked_only_with_a_payload_schema() -> None:
    compile_guard("payload.anything == 1", data_schema=DATA_SCHEMA)
    (issue,) = rejected("payload.coment == ''", payload_schema=PAYLOAD_SCHEMA)
    assert issue.code == "unknown-field"
    assert issue.hint == "did you mean `payload.comment`?"


def test_actor_fields_are_id_roles_department() -> None:
    compile_guard('actor.id != "" && "ops_lead" in actor.roles && actor.department == "ops"')
    (issue,) = rejected('actor.name == "x"')
    assert issue.code == "unknown-field"


def test_without_a_data_schema_fields_are_not_checked() -> None:
    compile_guard("data.whatever > 1")


def test_text_inside_strings_is_not_mistaken_for_fields() -> None:
    compile_guard('data.dept == "data.nothing (((" ', data_schema=DATA_SCHEMA)


# --- limits -----------------------------------------------------------------------------------------------


def test_length_limit() -> None:
    text = "data.a == 1" + " " * 990
    assert len(text) > expressions.MAX_LENGTH
    assert codes(text) == ["guard-too-complex"]
    compile_guard(text[: expressions.MAX_LENGTH])


def test_fifty_thousand_parentheses_never_reach_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def parser_reached() -> None:
        raise AssertionError("the hostile guard reached CEL")

    monkeypatch.setattr(expressions, "_cel", parser_reached)
    issues = rejected("(" * 50_000)
    assert {issue.code for issue in issues} == {"guard-too-complex"}
    assert any("nest" in issue.message for issue in issues)


def test_nesting_limit_is_thirty_two() -> None:
    compile_guard("(" * 32 + "1 == 1" + ")" * 32)
    (issue,) = rejected("(" * 33 + "1 == 1" + ")" * 33)
    assert issue.code == "guard-too-complex"
    assert "nest" in issue.message


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    compile_guard('data.dept != "' + "(" * 40 + '"')


def test_nested_comprehension_is_rejected() -> None:
    (issue,) = rejected("data.items.all(i, i.parts.exists(p, p > 0))")
    assert issue.code == "guard-too-complex"
    assert "inside another comprehension" in issue.message


def test_at_most_four_comprehensions() -> None:
    four = " && ".join(["data.tags.exists(t, t == 'x')"] * 4)
    compile_guard(four)
    assert codes(four + " && data.tags.all(t, t != '')") == ["guard-too-complex"]


def test_map_and_filter_are_rejected_for_their_quadratic_cost() -> None:
    assert codes("size(data.tags.map(t, t)) > 0") == ["guard-too-complex"]
    assert codes("size(data.tags.filter(t, t == 'x')) > 0") == ["guard-too-complex"]


def test_comprehension_body_may_not_rescan_the_data() -> None:
    (issue,) = rejected("data.tags.all(t, t in data.tags)", data_schema=DATA_SCHEMA)
    assert issue.code == "guard-too-complex"
    assert "data.tags" in issue.message


def test_comprehension_body_may_read_declared_scalars() -> None:
    compile_guard(
        "data.items.all(i, i.amount <= data.amount && i.code == data.code)", data_schema=DATA_SCHEMA
    )
    assert codes("data.items.all(i, i.title == data.title)", data_schema=DATA_SCHEMA) == ["guard-too-complex"]
    assert codes("data.items.all(i, i.amount <= data.amount)") == ["guard-too-complex"]


def test_concatenations_are_capped() -> None:
    compile_guard("size(" + " + ".join(["data.tags"] * 9) + ") > 0")
    assert codes("size(" + " + ".join(["data.tags"] * 10) + ") > 0") == ["guard-too-complex"]


def test_matches_needs_a_literal_pattern() -> None:
    compile_guard('data.dept.matches("^o")')
    assert codes("data.dept.matches(data.title)") == ["guard-too-complex"]


# --- evaluation -------------------------------------------------------------------------------------------


def test_true_and_false_on_real_data() -> None:
    text = 'data.amount > 10000 && data.dept in ["ops", "tech"]'
    assert run(text, {"amount": 25000.0, "dept": "ops"}) is True
    assert run(text, {"amount": 25000.0, "dept": "sales"}) is False
    assert run(text, {"amount": 9000.0, "dept": "ops"}) is False


def test_actor_and_payload_are_visible() -> None:
    text = '"ops_lead" in actor.roles && size(payload.comment) > 3'
    assert run(text, {}, {"comment": "looks fine"}) is True
    assert run(text, {}, {"comment": "ok"}) is False


def test_in_lists() -> None:
    assert run('"urgent" in data.tags', {"tags": ["urgent", "new"]}) is True
    assert run('"urgent" in data.tags', {"tags": []}) is False
    assert run("data.count in [1, 2, 3]", {"count": 4}) is False


def test_string_functions() -> None:
    data = {"title": "Q3 budget review", "code": "FIN-7"}
    assert run('data.title.startsWith("Q3") && size(data.title) == 16', data) is True
    assert run('data.title.endsWith("review") && data.title.contains("budget")', data) is True
    assert run('data.code.matches("^[A-Z]{3}-[0-9]+$")', data) is True
    assert run('data.title.startsWith("Q4")', data) is False


def test_int_and_double_comparisons() -> None:
    assert run("data.count > 2", {"count": 3}) is True
    assert run("data.amount >= 10000.5", {"amount": 10000.5}) is True
    assert run("data.amount > 10000", {"amount": 10000.25}) is True
    assert run("data.count < 2.5", {"count": 2}) is True
    assert run("data.count == 2.0", {"count": 2}) is True


def test_comprehensions_evaluate() -> None:
    data = {"items": [{"amount": 5}, {"amount": 50}], "amount": 60}
    assert run("data.items.all(i, i.amount <= data.amount)", data) is True
    assert run("data.items.exists_one(i, i.amount > 10)", data) is True
    assert run("data.items.exists(i, i.amount > 100)", data) is False


def test_has_tests_for_a_missing_field() -> None:
    text = "has(data.urgent) && data.urgent"
    assert run(text, {}) is False
    assert run(text, {"urgent": True}) is True


def test_missing_field_is_refused_with_a_has_hint() -> None:
    with pytest.raises(GuardRefused) as caught:
        run("data.amount > 10000", {"dept": "ops"})
    assert "data.amount > 10000" in caught.value.message
    assert "'amount' is missing" in caught.value.message
    assert caught.value.hint == "use has(data.amount) to test for a field that may be missing"


def test_missing_field_of_an_item_suggests_has_on_the_item() -> None:
    with pytest.raises(GuardRefused) as caught:
        run("data.items.all(i, i.amount > 0)", {"items": [{"amount": 1}, {"title": "no amount"}]})
    assert caught.value.hint == "use has(i.amount) to test for a field that may be missing"


def test_non_bool_result_is_refused() -> None:
    with pytest.raises(GuardRefused) as caught:
        run("data.count + 1", {"count": 1})
    assert "not true or false" in caught.value.message


def test_type_error_is_refused() -> None:
    with pytest.raises(GuardRefused) as caught:
        run('data.count + "x" == "1x"', {"count": 1})
    assert "types" in caught.value.message
    assert caught.value.hint is not None and "int()" in caught.value.hint


def test_division_by_zero_is_refused() -> None:
    with pytest.raises(GuardRefused, match="division by zero"):
        run("data.a / data.b > 1", {"a": 1, "b": 0})


GREATER = compile_guard("data.a > data.b", data_schema=DATA_SCHEMA)


@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_greater_than_matches_python(a: int, b: int) -> None:
    assert GREATER.evaluate(data={"a": a, "b": b}, payload={}, actor=ACTOR) is (a > b)


# --- the Guard value --------------------------------------------------------------------------------------


def test_guard_is_immutable_and_compares_by_text() -> None:
    first = compile_guard("data.a > 1")
    second = compile_guard("data.a > 1", data_schema=DATA_SCHEMA)
    assert first == second and hash(first) == hash(second)
    assert first != compile_guard("data.a > 2")
    assert isinstance(first, Guard)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.text = "true"  # type: ignore[misc]


def test_compiled_once_and_reused() -> None:
    guard = compile_guard("data.a > 1")
    assert [guard.evaluate(data={"a": n}, payload={}, actor=ACTOR) for n in (0, 5)] == [False, True]


# --- loading CEL ------------------------------------------------------------------------------------------


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_cel_is_loaded_lazily_and_without_its_command_line_tool() -> None:
    code = (
        "import sys\n"
        "from engine.definition.expressions import compile_guard\n"
        "print('cel.cel' in sys.modules)\n"
        "compile_guard('1 == 1')\n"
        "print('cel.cel' in sys.modules, 'typer' in sys.modules)\n"
        "import cel\n"  # a later ordinary import must reuse the loaded extension, not initialise it twice
        "print(cel.compile('1 + 1').execute({}))\n"
    )
    assert _python(code).split() == ["False", "True", "False", "2"]


def test_works_after_an_ordinary_import_of_cel() -> None:
    code = (
        "import cel\n"
        "from engine.definition.expressions import compile_guard\n"
        "print(compile_guard('data.a > 1').evaluate(data={'a': 2}, payload={}, actor={}))\n"
    )
    assert _python(code) == "True"
