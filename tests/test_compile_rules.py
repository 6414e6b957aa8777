"""The compiled definition (engine/compile.py), each rule tested so that weakening it fails a test, in
memory: guards are checked against the data schema and their transition's payload schema, a guard that
does not compile is a definition error naming the file, each guard and the machine are made once, `fire`
says where an event leads (or that it leads nowhere), choices and approval exits route, and data and
payloads are checked against their schemas (formats included) with each error's field named.

The test bed is the mini expense definition (tests/fixtures/mini)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from sopflow.engine.compile import APPROVED, REJECTED, ROUTE, CompiledDefinition, Fired, GuardContext
from sopflow.engine.definition.model import Branch, Definition, Expression, Transition
from sopflow.engine.definition.validate import load_definition_file, load_org_file
from sopflow.engine.errors import DefinitionError

MINI = Path(__file__).resolve().parent / "fixtures" / "mini"
ORG = load_org_file(MINI / "org.yaml")
EXPENSE = load_definition_file(MINI / "expense.yaml", ORG)
REVIEW = EXPENSE.states["manager_review"]
APPROVE_CLAIM = REVIEW.transitions[0]
SEND_BACK = REVIEW.transitions[1]
ACTOR = {"id": "mia", "roles": ["manager"], "department": "office"}


def with_guard(text: str) -> tuple[Definition, Expression]:
    """The expense definition with `approve_claim`'s guard replaced, as if the checks had been skipped."""
    when = Expression(text, (*APPROVE_CLAIM.path, "when"))
    changed = dataclasses.replace(APPROVE_CLAIM, when=when)
    review = dataclasses.replace(REVIEW, transitions=(changed, *REVIEW.transitions[1:]))
    return dataclasses.replace(EXPENSE, states={**EXPENSE.states, "manager_review": review}), when


def context(
    amount: float, permitted: tuple[Transition, ...] = (APPROVE_CLAIM,), **actor: Any
) -> GuardContext:
    return GuardContext(
        data={"amount": amount, "purpose": "taxi"},
        payload={"note": "ok"},
        actor={**ACTOR, **actor},
        permitted=frozenset(t.path for t in permitted),
    )


# -- guards ----------------------------------------------------------------------------------------------


def test_a_guard_that_does_not_compile_is_a_definition_error_naming_the_file() -> None:
    definition, when = with_guard("data.amout <= 500")
    compiled = CompiledDefinition(definition)
    with pytest.raises(DefinitionError) as caught:
        compiled.guard(when)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.col, problem.code) == (EXPENSE.file, 1, 1, "unknown-field")
    assert "amout" in problem.message and problem.hint is not None and "amount" in problem.hint
    with pytest.raises(DefinitionError):
        compiled.fire("manager_review", "approve_claim", context(100))


def test_a_guard_is_checked_against_its_transitions_payload_schema() -> None:
    good, good_when = with_guard("payload.note != ''")
    assert CompiledDefinition(good).guard(good_when).text == "payload.note != ''"
    bad, bad_when = with_guard("payload.nothing == 'x'")
    with pytest.raises(DefinitionError, match="unknown-field"):
        CompiledDefinition(bad).guard(bad_when)


def test_a_guard_sees_the_acting_person_when_it_reads_them() -> None:
    definition, _ = with_guard("'manager' in actor.roles")
    compiled = CompiledDefinition(definition)
    assert compiled.fire("manager_review", "approve_claim", context(100)) is not None
    assert compiled.fire("manager_review", "approve_claim", context(100, roles=["finance"])) is None


def test_each_guard_compiles_once_and_the_machine_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = CompiledDefinition(EXPENSE)
    assert APPROVE_CLAIM.when is not None
    first = compiled.guard(APPROVE_CLAIM.when)
    assert compiled.guard(APPROVE_CLAIM.when) is first
    builds = 0
    build = compiled._build

    def counted() -> Any:
        nonlocal builds
        builds += 1
        return build()

    monkeypatch.setattr(compiled, "_build", counted)
    for amount in (100, 900, 100):
        compiled.fire("manager_review", "approve_claim", context(amount))
    assert builds == 1
    assert compiled.guard(APPROVE_CLAIM.when) is first


# -- fire ------------------------------------------------------------------------------------------------


def test_fire_takes_the_permitted_transition_whose_guard_holds() -> None:
    compiled = CompiledDefinition(EXPENSE)
    assert compiled.fire("manager_review", "approve_claim", context(100)) == Fired("paid", APPROVE_CLAIM)
    assert compiled.fire("manager_review", "approve_claim", context(900)) is None  # the guard does not hold
    assert compiled.fire("manager_review", "approve_claim", context(100, permitted=())) is None
    assert compiled.fire("manager_review", "send_back", context(100, permitted=(SEND_BACK,))) == Fired(
        "draft", SEND_BACK
    )


def test_a_choice_routes_by_its_first_branch_that_holds_else_the_last() -> None:
    compiled = CompiledDefinition(EXPENSE)
    over, otherwise = EXPENSE.states["route"].choice
    assert isinstance(over, Branch) and otherwise.when is None
    assert compiled.fire("route", ROUTE, context(2000)) == Fired("joint", over)
    assert compiled.fire("route", ROUTE, context(1000)) == Fired("manager_review", otherwise)


def test_an_approval_leaves_by_its_approved_and_rejected_exits() -> None:
    compiled = CompiledDefinition(EXPENSE)
    assert compiled.fire("joint", APPROVED, context(0)) == Fired("paid", None)
    assert compiled.fire("joint", REJECTED, context(0)) == Fired("draft", None)


def test_alternatives_are_the_transitions_of_an_event_in_order() -> None:
    compiled = CompiledDefinition(EXPENSE)
    assert compiled.alternatives("manager_review", "approve_claim") == (APPROVE_CLAIM,)
    assert compiled.alternatives("draft", "submit") == EXPENSE.states["draft"].transitions[:1]
    assert compiled.alternatives("manager_review", "submit") == ()
    assert compiled.alternatives("nowhere", "submit") == ()


# -- data and payloads -----------------------------------------------------------------------------------


def test_data_errors_name_each_field_in_order() -> None:
    compiled = CompiledDefinition(EXPENSE)
    assert compiled.data_errors({"amount": 1, "purpose": "taxi"}) == []
    assert compiled.data_errors({"amount": -1, "purpose": ""}) == [
        "amount: -1 is less than the minimum of 0",
        "purpose: '' should be non-empty",
    ]
    assert compiled.data_errors({"amount": 1}) == ["'purpose' is a required property"]


def test_read_only_data_is_checked_as_plain_json() -> None:
    compiled = CompiledDefinition(EXPENSE)
    assert compiled.data_errors(MappingProxyType({"amount": 1, "purpose": "taxi"})) == []


def test_formats_in_the_data_schema_are_checked() -> None:
    dated = dataclasses.replace(
        EXPENSE, data_schema={"type": "object", "properties": {"day": {"type": "string", "format": "date"}}}
    )
    compiled = CompiledDefinition(dated)
    assert compiled.data_errors({"day": "2026-03-02"}) == []
    assert compiled.data_errors({"day": "2026-13-45"}) == ["day: '2026-13-45' is not a 'date'"]


def test_payload_errors_follow_the_transitions_payload_schema() -> None:
    compiled = CompiledDefinition(EXPENSE)
    assert compiled.payload_errors(APPROVE_CLAIM, {"note": "ok"}) == []
    assert compiled.payload_errors(APPROVE_CLAIM, {}) == ["'note' is a required property"]
    assert compiled.payload_errors(APPROVE_CLAIM, {"note": ""}) == ["note: '' should be non-empty"]
    assert compiled.payload_errors(SEND_BACK, {"anything": 1}) == []  # no payload schema: anything goes
    # Each transition keeps its own validator: checking one payload does not change another's.
    assert compiled.data_errors({"amount": 1, "purpose": "taxi"}) == []
    assert compiled.payload_errors(APPROVE_CLAIM, {}) == ["'note' is a required property"]


def test_data_errors_name_a_nested_field_by_its_path() -> None:
    nested = dataclasses.replace(
        EXPENSE,
        data_schema={
            "type": "object",
            "properties": {
                "budget": {
                    "type": "object",
                    "properties": {"lines": {"type": "array", "items": {"type": "number"}}},
                }
            },
        },
    )
    assert CompiledDefinition(nested).data_errors({"budget": {"lines": [1, "two"]}}) == [
        "budget.lines.1: 'two' is not of type 'number'"
    ]


def test_each_schema_validator_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonschema

    built: list[Any] = []
    real = jsonschema.Draft202012Validator

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return real(*args, **kwargs)

    compiled = CompiledDefinition(EXPENSE)
    monkeypatch.setattr(jsonschema, "Draft202012Validator", counted)
    monkeypatch.setattr(counted, "FORMAT_CHECKER", real.FORMAT_CHECKER, raising=False)
    for _ in range(3):
        compiled.data_errors({"amount": 1, "purpose": "taxi"})
        compiled.payload_errors(APPROVE_CLAIM, {"note": "ok"})
    assert len(built) == 2  # one for the data, one for the payload


def test_the_machine_has_only_the_definitions_events() -> None:
    # No automatic `to_<state>` event could move a case anywhere, and an event a state does not have is
    # a bug of the caller, never a quiet "no guard held".
    compiled = CompiledDefinition(EXPENSE)
    with pytest.raises(KeyError):
        compiled.fire("draft", "to_paid", context(1))
    with pytest.raises(Exception, match="approve_claim") as caught:
        compiled.fire("draft", "approve_claim", context(1))
    assert not isinstance(caught.value, KeyError)


def test_a_guard_that_does_not_read_the_acting_person_is_not_handed_them() -> None:
    # Converting the actor into CEL values costs more than a simple guard: a guard that never names
    # `actor` gets none, so even an actor CEL could not convert does not matter to it.
    compiled = CompiledDefinition(EXPENSE)
    strange = context(100, id=object())
    assert compiled.fire("manager_review", "approve_claim", strange) == Fired("paid", APPROVE_CLAIM)
    # So with the case: a guard that never names `case` is not handed it.
    odd_case = dataclasses.replace(context(100), case={"started_by": object()})
    assert compiled.fire("manager_review", "approve_claim", odd_case) == Fired("paid", APPROVE_CLAIM)


def test_an_event_named_like_a_machine_method_leaves_the_embedders_logs_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The machine has no model of its own: `transitions` would otherwise bind each event onto the machine
    # and log a warning, into the host application's logs, for every event named like one of its methods.
    dispatch = dataclasses.replace(SEND_BACK, event="dispatch")
    review = dataclasses.replace(REVIEW, transitions=(APPROVE_CLAIM, dispatch))
    definition = dataclasses.replace(EXPENSE, states={**EXPENSE.states, "manager_review": review})
    with caplog.at_level(logging.WARNING):
        fired = CompiledDefinition(definition).fire(
            "manager_review", "dispatch", context(1, permitted=(dispatch,))
        )
    assert fired == Fired("draft", dispatch)
    assert [r.getMessage() for r in caplog.records] == []


FIXTURES = MINI.parent


def _distribution(*leave_out: str) -> Definition:
    org = load_org_file(FIXTURES / "rules" / "distribution-org.yaml")
    full = load_definition_file(FIXTURES / "rules" / "distribution.yaml", org)
    # Without the choice that reads `case`: only what an assignment reads is asked here.
    kept = {k: s for k, s in full.states.items() if k not in (*leave_out, "triage")}
    return dataclasses.replace(full, states=kept)


@pytest.mark.parametrize(
    ("leave_out", "reads"),
    [
        ((), True),
        (("redo",), True),  # an assignment's `not_by: [fired:handle]` reads who handled the case
        (("check",), True),  # `fired_by: handle` does
        (("check", "redo"), False),
    ],
)
def test_a_definition_reads_the_case_history_when_an_assignment_names_who_fired(
    leave_out: tuple[str, ...], reads: bool
) -> None:
    compiled = CompiledDefinition(_distribution(*leave_out))
    assert compiled.reads_history is reads
    assert compiled.reads_case is False


def test_the_guards_of_a_parallel_states_branches_are_compiled() -> None:
    org = load_org_file(FIXTURES / "branches" / "org.yaml")
    launch = load_definition_file(FIXTURES / "branches" / "launch.yaml", org)
    parallel = launch.states["preparing"].parallel
    assert parallel is not None
    booked = parallel.branches["venue"].states["booking"].transitions[0]
    assert booked.when is not None
    compiled = CompiledDefinition(launch)
    guard = compiled.guard(booked.when)
    assert guard.evaluate(data={"budget": 1}, payload={}, actor={}, case=None) is True
    assert compiled.check(booked.when, GuardContext(data={}, payload={}, actor={})) is False
    assert compiled.check(booked.when, GuardContext(data={"budget": 1}, payload={}, actor={})) is True


def test_a_guard_reads_the_events_payload_when_it_fires() -> None:
    definition, _ = with_guard("payload.note == 'ok'")
    compiled = CompiledDefinition(definition)
    fired = compiled.fire("manager_review", "approve_claim", context(100))
    assert fired is not None and fired.state == "paid"
    other = dataclasses.replace(context(100), payload={"note": "later"})
    assert compiled.fire("manager_review", "approve_claim", other) is None


def test_a_computed_value_is_checked_against_its_transitions_payload_schema() -> None:
    def computing(text: str) -> tuple[Definition, Expression]:
        expr = Expression(text, (*APPROVE_CLAIM.path, "compute", "note"))
        changed = dataclasses.replace(APPROVE_CLAIM, compute={"note": expr})
        review = dataclasses.replace(REVIEW, transitions=(changed, *REVIEW.transitions[1:]))
        return dataclasses.replace(EXPENSE, states={**EXPENSE.states, "manager_review": review}), expr

    good, good_expr = computing("payload.note")
    assert CompiledDefinition(good).guard(good_expr).text == "payload.note"
    bad, bad_expr = computing("payload.nothing")
    with pytest.raises(DefinitionError, match="unknown-field"):
        CompiledDefinition(bad).guard(bad_expr)


def test_an_approvals_computed_value_is_checked_against_the_approvals_payload_schema() -> None:
    duties = load_definition_file(MINI.parent / "rules" / "duties.yaml", ORG)
    vote = duties.states["vote"]
    assert vote.approval is not None
    for text, compiles in (("payload.payer", True), ("payload.nothing", False)):
        expr = Expression(text, (*vote.approval.path, "compute", "approved_tier"))
        approval = dataclasses.replace(vote.approval, compute={"approved_tier": expr})
        states = {**duties.states, "vote": dataclasses.replace(vote, approval=approval)}
        compiled = CompiledDefinition(dataclasses.replace(duties, states=states))
        if compiles:
            assert compiled.guard(expr).text == text
        else:
            with pytest.raises(DefinitionError, match="unknown-field"):
                compiled.guard(expr)


def test_a_guard_reading_who_fired_an_event_makes_the_definition_read_the_history() -> None:
    assert CompiledDefinition(EXPENSE).reads_history is False
    definition, _ = with_guard("has(case.fired_by.submit)")
    compiled = CompiledDefinition(definition)
    assert (compiled.reads_history, compiled.reads_case) == (True, True)
