"""The second edition's step rules (engine/step.py), in memory, each tested so that weakening it fails a
test: who may start a case and on what condition, who may not act (`not_by`: the starter, the assignee,
whoever fired an event, a person named in the data), computed values, people in user fields, approvals
that carry data, guards that read the case, staying in a state, and resuming a case from its sub-process.

The test beds are tests/fixtures/rules/duties.yaml with the mini org, and the purchase of
tests/fixtures/nested for sub-processes. The durable runtime's side is in tests/test_duties.py,
tests/test_case_control.py and tests/test_subprocesses.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import APPROVE, REJECT, RESUME, Expression
from sopflow.engine.definition.validate import load_definition_file, load_org_file
from sopflow.engine.errors import GuardRefused, InvalidData, NotAvailable, NotPermitted, SopflowError
from sopflow.engine.simulate import SimCase, Simulation
from sopflow.engine.step import (
    SYSTEM_ACTOR,
    Actor,
    People,
    Refused,
    Snapshot,
    Vote,
    case_view,
    excluded_people,
    start_step,
    take_step,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ORG = load_org_file(FIXTURES / "mini" / "org.yaml")
DUTIES = load_definition_file(FIXTURES / "rules" / "duties.yaml", ORG)
NESTED_ORG = load_org_file(FIXTURES / "nested" / "org.yaml")
PURCHASE = load_definition_file(FIXTURES / "nested" / "purchase.yaml", NESTED_ORG)
PEOPLE = People(ORG, lambda role: None)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sim() -> Simulation:
    return Simulation(CompiledDefinition(DUTIES), ORG, clock=Clock())


def refusal(
    sim: Simulation, case: SimCase, user: str, event: str, payload: dict[str, Any] | None = None
) -> Any:
    """The error an event is refused with; the case's state and data are unchanged."""
    before = (case.state, dict(case.data), case.snapshot.assignee)
    with pytest.raises(SopflowError) as caught:
        sim.fire(case, user, event, payload)
    assert (case.state, dict(case.data), case.snapshot.assignee) == before
    return caught.value


def started(sim: Simulation, user: str = "alice", **data: Any) -> SimCase:
    return sim.start(user, {"title": "taxi", "amount": 100, **data})


def in_review(sim: Simulation, reviewer: str = "mia", amount: int = 100) -> SimCase:
    case = started(sim, amount=amount)
    sim.fire(case, "alice", "submit", {"reviewer": reviewer})
    assert (case.state, case.snapshot.assignee) == ("review", reviewer)
    return case


def in_vote(sim: Simulation, checker: str = "max") -> SimCase:
    case = in_review(sim)
    sim.fire(case, checker, "check")
    assert case.state == "vote"
    return case


# -- starting ----------------------------------------------------------------------------------------------


def test_a_start_needs_a_role_the_rule_lists() -> None:
    compiled = CompiledDefinition(DUTIES)
    with pytest.raises(NotPermitted) as caught:
        start_step(compiled, _actor("fay"), {"title": "t", "amount": 1}, PEOPLE)
    assert (caught.value.message, caught.value.hint) == (
        "fay may not start a case of duties@1: it needs manager or employee",
        "fay holds finance",
    )
    with pytest.raises(NotPermitted) as nobody:
        start_step(compiled, Actor(id="ghost", roles=frozenset()), {"title": "t", "amount": 1}, PEOPLE)
    assert nobody.value.hint == "ghost holds no role"
    dual = start_step(compiled, _actor("dual"), {"title": "t", "amount": 1}, PEOPLE)
    assert dual.role == "manager"  # the first role the rule lists that dual holds, not the first held
    assert start_step(compiled, _actor("alice"), {"title": "t", "amount": 1}, PEOPLE).role == "employee"


def test_a_start_needs_its_condition_to_hold() -> None:
    compiled = CompiledDefinition(DUTIES)
    with pytest.raises(GuardRefused) as caught:
        start_step(compiled, _actor("alice"), {"title": "t", "amount": 1000}, PEOPLE)
    assert (caught.value.message, caught.value.hint) == (
        "a case of duties@1 may not be started: a claim starts below 1000 (金额须小于1000)",
        "the condition is `data.amount < 1000`",
    )


def test_a_start_condition_without_an_explanation_names_itself() -> None:
    rule = DUTIES.start
    assert rule is not None
    plain = CompiledDefinition(_replace(DUTIES, start=_replace(rule, explain=None)))
    with pytest.raises(GuardRefused) as caught:
        start_step(plain, _actor("alice"), {"title": "t", "amount": 5000}, PEOPLE)
    assert (caught.value.message, caught.value.hint) == (
        "a case of duties@1 may not be started: the condition `data.amount < 1000` does not hold",
        "change the start data",
    )
    anyone = CompiledDefinition(_replace(DUTIES, start=_replace(rule, by=(), when=None)))
    assert start_step(anyone, _actor("fay"), {"title": "t", "amount": 5000}, PEOPLE).role == "finance"


# -- not_by ------------------------------------------------------------------------------------------------


def test_not_by_names_who_is_excluded_and_why() -> None:
    snapshot = Snapshot(
        state="review",
        data={"reviewer": "mia", "payer": 7},
        starter="alice",
        assignee="max",
        fired=(("submit", "alice"), ("check", "max"), ("check", "dual"), ("approve", "mia")),
    )
    not_by = ["$starter", "$assignee", "fired:check", "data:reviewer", "data:payer", "fired:pay"]
    assert excluded_people(not_by, snapshot, snapshot.data) == {
        "alice": "started the case",
        "max": "is the case's assignee",
        "dual": "fired `check` on the case",
        "mia": "is named in the data field `reviewer`",
    }
    unassigned = Snapshot(state="review", data={}, starter="alice")
    assert excluded_people(["$assignee", "data:reviewer"], unassigned, {}) == {}


def test_the_starter_and_the_assignee_may_not_check(sim: Simulation) -> None:
    case = in_review(sim, reviewer="mia")
    error = refusal(sim, case, "mia", "check")
    assert (error.message, error.hint) == (
        "mia is the case's assignee and may not fire `check` (separation of duties)",
        "someone else must; excluded here: $starter, $assignee",
    )
    record = case.history[-1]
    assert (record.outcome, record.role) == ("refused", "manager")
    assert record.detail == {"rule": "separation-of-duties", "excluded": ["$starter", "$assignee"]}
    error = refusal(sim, case, "alice", "check")
    assert error.message == "alice started the case and may not fire `check` (separation of duties)"
    step = sim.fire(case, "max", "check")
    assert (step.role, case.state) == ("manager", "vote")


def test_a_delegate_of_an_excluded_person_is_excluded_too() -> None:
    sim = _delegating({"fay": {"manager": "mia"}})
    case = in_review(sim, reviewer="mia")
    error = refusal(sim, case, "fay", "check")
    assert error.message == (
        "fay acts for mia, who is the case's assignee and may not fire `check` (separation of duties)"
    )
    other = in_review(sim, reviewer="max")
    assert sim.fire(other, "fay", "check").on_behalf_of == "mia"


def test_a_person_named_in_the_data_may_not_recheck(sim: Simulation) -> None:
    case = in_review(sim, reviewer="mia")
    error = refusal(sim, case, "mia", "recheck")
    assert error.message == (
        "mia is named in the data field `reviewer` and may not fire `recheck` (separation of duties)"
    )
    assert sim.fire(case, "dual", "recheck").to_state == "vote"


def test_whoever_checked_may_not_vote_and_is_not_counted(sim: Simulation) -> None:
    case = in_vote(sim, checker="max")
    error = refusal(sim, case, "max", APPROVE, {"payer": "fay"})
    assert (error.message, error.hint) == (
        "max fired `check` on the case and may not vote in `vote` (separation of duties)",
        "someone else must; excluded here: $starter, fired:check",
    )
    assert case.history[-1].detail == {
        "rule": "separation-of-duties",
        "excluded": ["$starter", "fired:check"],
    }
    # mia and dual may still approve; once both reject, only max, who is excluded, is left: rejected.
    assert sim.fire(case, "mia", REJECT).detail["outcome"] == "pending"
    assert sim.fire(case, "dual", REJECT).detail["outcome"] == "rejected"
    assert case.state == "draft"


def test_the_approver_and_the_starter_may_not_pay(sim: Simulation) -> None:
    case = in_vote(sim)
    sim.fire(case, "mia", APPROVE, {"payer": "fay"})
    assert (case.state, case.snapshot.assignee) == ("paying", "fay")
    assert sim.fire(case, "fay", "pay").to_state == "paid"
    dual_approved = in_vote(sim)
    sim.fire(dual_approved, "dual", APPROVE, {"payer": "fay"})
    error = refusal(sim, dual_approved, "dual", "pay")
    assert error.message == "dual fired `approve` on the case and may not fire `pay` (separation of duties)"


def test_the_system_is_never_excluded() -> None:
    compiled = CompiledDefinition(DUTIES)
    snapshot = Snapshot(state="review", data={"title": "t", "amount": 1}, starter="alice", assignee="mia")
    step = take_step(compiled, snapshot, SYSTEM_ACTOR, "check", {}, PEOPLE)
    assert (step.to_state, step.role) == ("vote", "$system")


# -- computed values, user fields, approvals with data -----------------------------------------------------


@pytest.mark.parametrize(("amount", "tier"), [(100, "small"), (500, "small"), (501, "large")])
def test_a_computed_value_is_set_and_recorded(sim: Simulation, amount: int, tier: str) -> None:
    case = started(sim, amount=amount)
    step = sim.fire(case, "alice", "submit")
    assert case.data["tier"] == tier
    assert step.detail == {"computed": {"tier": tier}}
    assert step.data_change["tier"] == [None, tier]


def test_a_person_in_a_payload_field_must_hold_its_role(sim: Simulation) -> None:
    case = started(sim)
    error = refusal(sim, case, "alice", "submit", {"reviewer": "fay"})
    assert (error.kind, error.message, error.hint) == (
        "invalid-data",
        "payload field `reviewer` names fay, who does not hold the role manager",
        "give a member of manager: mia, max, dual",
    )
    error = refusal(sim, case, "alice", "submit", {"reviewer": "nobody"})
    assert (error.message, error.hint) == (
        "payload field `reviewer` names 'nobody', who is not a person of the org `mini-co`",
        "give a user id of a member of manager: mia, max, dual",
    )
    assert len([r for r in case.history if r.outcome == "refused"]) == 0


def test_a_person_in_the_start_data_is_checked() -> None:
    compiled = CompiledDefinition(DUTIES)
    with pytest.raises(InvalidData) as caught:
        start_step(compiled, _actor("alice"), {"title": "t", "amount": 1, "payer": "mia"}, PEOPLE)
    assert caught.value.message == "data field `payer` names mia, who does not hold the role finance"


def test_a_person_in_the_data_is_checked_when_a_step_changes_that_field() -> None:
    compiled = CompiledDefinition(DUTIES)
    # The payer was valid when written; a later step that leaves the field alone does not check it again.
    stale = Snapshot(state="draft", data={"title": "t", "amount": 1, "payer": "mia"}, starter="alice")
    step = take_step(compiled, stale, _actor("alice"), "note", {"note": "n"}, PEOPLE)
    assert step.data["payer"] == "mia"
    fresh = Snapshot(state="vote", data={"title": "t", "amount": 1}, starter="alice")
    with pytest.raises(InvalidData) as caught:
        take_step(compiled, fresh, _actor("mia"), APPROVE, {"payer": "b1"}, PEOPLE)
    assert (caught.value.message, caught.value.hint) == (
        "payload field `payer` names b1, who does not hold the role finance",
        "give a member of finance: fay, dual",
    )


def test_an_approval_takes_its_payload_into_the_data(sim: Simulation) -> None:
    case = in_vote(sim)
    step = sim.fire(case, "mia", APPROVE, {"payer": "fay"})
    assert (case.state, case.data["payer"], case.data["approved_tier"]) == ("paying", "fay", "small")
    assert step.detail["payload"] == {"payer": "fay"}
    assert step.detail["computed"] == {"approved_tier": "small"}
    assert step.data_change == {"payer": [None, "fay"], "approved_tier": [None, "small"]}


def test_an_approval_payload_is_checked_and_never_dropped(sim: Simulation) -> None:
    case = in_vote(sim)
    error = refusal(sim, case, "mia", APPROVE, {})
    assert (error.message, error.hint) == (
        "the payload of `approve` is not valid: 'payer' is a required property",
        "`approve` takes payer* (* required), e.g. --data '{\"payer\": ...}'",
    )
    error = refusal(sim, case, "mia", APPROVE, {"payer": "mia"})
    assert error.message == "payload field `payer` names mia, who does not hold the role finance"
    error = refusal(sim, case, "mia", REJECT, {"payer": "fay"})
    assert (error.message, error.hint) == (
        "`reject` in `vote` takes no payload: only `approve` does",
        "fire `reject` without --data; a comment (--comment) says why",
    )
    assert sim.fire(case, "mia", REJECT).detail["outcome"] == "pending"


def test_a_payload_on_an_approval_that_declares_none_is_refused() -> None:
    approval = DUTIES.states["vote"].approval
    assert approval is not None
    bare = _replace(approval, payload=None, copy={}, compute={})
    vote = _replace(DUTIES.states["vote"], approval=bare)
    compiled = CompiledDefinition(_replace(DUTIES, states={**DUTIES.states, "vote": vote}))
    snapshot = Snapshot(state="vote", data={"title": "t", "amount": 1}, starter="alice")
    with pytest.raises(InvalidData) as caught:
        take_step(compiled, snapshot, _actor("mia"), APPROVE, {"payer": "fay"}, PEOPLE)
    assert caught.value.message == "`approve` in `vote` takes no payload"
    step = take_step(compiled, snapshot, _actor("mia"), APPROVE, {}, PEOPLE)
    assert (step.to_state, step.data_change) == ("paying", {})


def test_a_pending_vote_that_changes_the_data_is_checked_and_recorded() -> None:
    approval = DUTIES.states["vote"].approval
    assert approval is not None
    quorum = _replace(approval, rule="quorum", roles=("manager",), at_least=2)
    vote = _replace(DUTIES.states["vote"], approval=quorum)
    compiled = CompiledDefinition(_replace(DUTIES, states={**DUTIES.states, "vote": vote}))
    snapshot = Snapshot(state="vote", data={"title": "t", "amount": 1, "tier": "large"}, starter="alice")
    step = take_step(compiled, snapshot, _actor("mia"), APPROVE, {"payer": "fay"}, PEOPLE)
    assert (step.detail["outcome"], step.to_state, step.entered) == ("pending", "vote", ())
    assert step.data_change == {"payer": [None, "fay"], "approved_tier": [None, "large"]}
    assert step.data == {"title": "t", "amount": 1, "tier": "large", "payer": "fay", "approved_tier": "large"}
    bad = Snapshot(state="vote", data={"title": "t", "amount": 1, "tier": 5}, starter="alice")
    with pytest.raises(InvalidData, match="approved_tier"):
        take_step(compiled, bad, _actor("mia"), APPROVE, {"payer": "fay"}, PEOPLE)


# -- the case as guards see it -----------------------------------------------------------------------------


def test_a_guard_sees_who_started_the_case_and_how_long_it_waits() -> None:
    clock = Clock()
    sim = Simulation(CompiledDefinition(DUTIES), ORG, clock=clock)
    case = started(sim)
    error = refusal(sim, case, "mia", "cancel")
    assert (error.message, error.hint) == (
        "`cancel` is refused in state `draft`: a manager cancels only a claim left an hour "
        "(经理只能撤销搁置一小时的)",
        "the condition is `actor.id == case.started_by || case.seconds_in_state > 3600`",
    )
    clock.now += timedelta(hours=1)
    refusal(sim, case, "mia", "cancel")  # exactly an hour is not more than an hour
    clock.now += timedelta(seconds=1)
    assert sim.fire(case, "mia", "cancel").to_state == "cancelled"
    other = started(sim)
    assert sim.fire(other, "alice", "cancel").to_state == "cancelled"


def test_the_case_view() -> None:
    snapshot = Snapshot(
        state="review",
        data={},
        starter="alice",
        assignee="mia",
        fired=(("submit", "alice"), ("check", "max"), ("submit", "alice"), ("submit", "bob")),
        started_at="2026-03-02T09:00:00.000000+00:00",
        entered_at="2026-03-02T10:00:00.000000+00:00",
        now="2026-03-02T10:30:00.500000+00:00",
    )
    assert case_view(snapshot) == {
        "started_by": "alice",
        "started_at": "2026-03-02T09:00:00.000000+00:00",
        "fired_by": {"submit": ["alice", "bob"], "check": ["max"]},
        "assignee": "mia",
        "entered_at": "2026-03-02T10:00:00.000000+00:00",
        "seconds_in_state": 1800,
    }
    bare = Snapshot(state="draft", data={}, starter="alice", now="2026-03-02T09:00:00.000000+00:00")
    assert case_view(bare) == {
        "started_by": "alice",
        "started_at": "2026-03-02T09:00:00.000000+00:00",
        "fired_by": {},
        "assignee": "",
        "entered_at": "2026-03-02T09:00:00.000000+00:00",
        "seconds_in_state": 0,
    }
    early = Snapshot(
        state="draft",
        data={},
        starter="a",
        entered_at="2026-03-02T10:00:00+00:00",
        now="2026-03-02T09:00:00+00:00",
    )
    assert case_view(early)["seconds_in_state"] == 0  # a clock set back never counts below zero
    timeless = case_view(Snapshot(state="draft", data={}, starter="a"))
    assert (timeless["started_at"], timeless["entered_at"], timeless["seconds_in_state"]) == ("", "", 0)


# -- staying in a state ------------------------------------------------------------------------------------


def test_a_transition_back_to_its_own_state_stays(sim: Simulation) -> None:
    case = started(sim)
    step = sim.fire(case, "alice", "note", {"note": "receipt attached"})
    assert (step.event, step.from_state, step.to_state, step.entered, step.role) == (
        "note",
        "draft",
        "draft",
        (),
        "$starter",
    )
    assert step.detail == {"payload": {"note": "receipt attached"}, "stayed": True}
    assert (step.data_change, step.assignee, step.on_behalf_of) == (
        {"note": [None, "receipt attached"]},
        None,
        None,
    )
    assert step.data == dict(case.data) and case.data["note"] == "receipt attached"
    unchanged = sim.fire(case, "alice", "note")
    assert (unchanged.data_change, unchanged.detail) == ({}, {"stayed": True})


def test_a_stay_keeps_the_assignee_and_checks_the_data() -> None:
    compiled = CompiledDefinition(DUTIES)
    snapshot = Snapshot(state="draft", data={"title": "t", "amount": 1}, starter="alice", assignee="bob")
    step = take_step(compiled, snapshot, _actor("mia"), "note", {"note": "n"}, PEOPLE)
    assert (step.assignee, step.role) == ("bob", "manager")
    delegate = _actor("bob", {"manager": "mia"})
    assert take_step(compiled, snapshot, delegate, "note", {}, PEOPLE).on_behalf_of == "mia"
    invalid = Snapshot(state="draft", data={"title": "", "amount": 1}, starter="alice")
    with pytest.raises(InvalidData, match="would leave the case's data invalid"):
        take_step(compiled, invalid, _actor("alice"), "note", {"note": "n"}, PEOPLE)


def test_reenter_and_an_old_record_enter_the_state_again(sim: Simulation) -> None:
    case = started(sim)
    step = sim.fire(case, "alice", "redo")
    assert (step.entered, "stayed" in step.detail) == (("draft",), False)
    compiled = sim.compiled
    old = take_step(compiled, case.snapshot, _actor("alice"), "note", {}, PEOPLE, stay=False)
    assert (old.entered, "stayed" in old.detail) == (("draft",), False)


# -- resuming from a sub-process ---------------------------------------------------------------------------


def _waiting() -> Snapshot:
    return Snapshot(state="quoting", data={"item": "desk", "amount": 300}, starter="alice")


def test_the_engine_resumes_a_case_by_its_childs_outcome() -> None:
    compiled = CompiledDefinition(PURCHASE)
    people = People(NESTED_ORG, lambda role: None)
    payload = {"outcome": "accepted", "values": {"price": 250, "other": 1}}
    step = take_step(compiled, _waiting(), SYSTEM_ACTOR, RESUME, payload, people)
    assert (step.event, step.to_state, step.role, step.on_behalf_of) == (RESUME, "ordered", "$system", None)
    assert step.data_change == {"price": [None, 250]}
    assert step.detail == {}
    declined = take_step(compiled, _waiting(), SYSTEM_ACTOR, RESUME, {"outcome": "declined"}, people)
    assert (declined.to_state, declined.data_change) == ("draft", {})
    no_values = take_step(
        compiled, _waiting(), SYSTEM_ACTOR, RESUME, {"outcome": "accepted", "values": [1]}, people
    )
    assert no_values.data_change == {}


def test_an_outcome_the_sub_process_does_not_map_is_invalid() -> None:
    compiled = CompiledDefinition(PURCHASE)
    people = People(NESTED_ORG, lambda role: None)
    for outcome in ("lost", None, 3, ["accepted"]):
        with pytest.raises(InvalidData) as caught:
            take_step(compiled, _waiting(), SYSTEM_ACTOR, RESUME, {"outcome": outcome}, people)
        assert (caught.value.message, caught.value.hint) == (
            f"the sub-process of `quoting` closed in {outcome!r}, which its `on` does not map",
            "map every final state of quote under `subprocess: on:`",
        )


def test_no_person_resumes_a_case_and_no_other_state_is_resumed() -> None:
    compiled = CompiledDefinition(PURCHASE)
    people = People(NESTED_ORG, lambda role: None)
    alice = load_actor(NESTED_ORG, "alice")
    with pytest.raises(Refused) as caught:
        take_step(compiled, _waiting(), alice, RESUME, {"outcome": "accepted"}, people)
    assert (caught.value.error.message, caught.value.error.hint) == (
        f"alice may not fire `{RESUME}`: the engine resumes the case when its sub-process closes",
        "act on the child case (a case of quote); `sopflow show` names it",
    )
    assert (caught.value.role, caught.value.detail) == (None, {"needed": ["$system"]})
    draft = Snapshot(state="draft", data={"title": "t", "amount": 1}, starter="alice")
    with pytest.raises(NotAvailable) as missing:
        take_step(CompiledDefinition(DUTIES), draft, SYSTEM_ACTOR, RESUME, {"outcome": "accepted"}, PEOPLE)
    assert (missing.value.message, missing.value.hint) == (
        f"`{RESUME}` is not an event of state `draft` (Draft (草稿))",
        "events here: submit, note, redo, cancel",
    )
    bare = _replace(DUTIES.states["draft"], transitions=())
    nothing = CompiledDefinition(_replace(DUTIES, states={**DUTIES.states, "draft": bare}))
    with pytest.raises(NotAvailable) as none:
        take_step(nothing, draft, SYSTEM_ACTOR, RESUME, {"outcome": "accepted"}, PEOPLE)
    assert none.value.hint == "events here: none"


# -- helpers ----------------------------------------------------------------------------------------------


def _actor(user: str, delegated: dict[str, str] | None = None) -> Any:
    from sopflow.engine.step import actor_from_org

    return actor_from_org(ORG, user, delegated)


def load_actor(org: Any, user: str) -> Any:
    from sopflow.engine.step import actor_from_org

    return actor_from_org(org, user)


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def _delegating(delegations: dict[str, dict[str, str]]) -> Simulation:
    class Delegating(Simulation):
        def actor(self, user_id: str) -> Any:
            return _actor(user_id, delegations.get(user_id))

    return Delegating(CompiledDefinition(DUTIES), ORG, clock=Clock())


# -- what mutation testing showed untested ------------------------------------------------------------------


def _with_vote(**changes: Any) -> CompiledDefinition:
    """The duties definition with its approval changed, as a definition may write it."""
    approval = DUTIES.states["vote"].approval
    assert approval is not None
    vote = _replace(DUTIES.states["vote"], approval=_replace(approval, **changes))
    return CompiledDefinition(_replace(DUTIES, states={**DUTIES.states, "vote": vote}))


def _expr(text: str, *path: str | int) -> Expression:
    return Expression(text, path)


VOTING = Snapshot(
    state="vote", data={"title": "t", "amount": 1}, starter="alice", now="2026-03-02T09:00:00+00:00"
)


def test_an_approval_that_only_copies_sets_or_computes_changes_the_data() -> None:
    copies = _with_vote(compute={})
    assert take_step(copies, VOTING, _actor("mia"), APPROVE, {"payer": "fay"}, PEOPLE).data_change == {
        "payer": [None, "fay"]
    }
    sets = _with_vote(payload=None, copy={}, compute={}, set={"note": "seen"})
    assert take_step(sets, VOTING, _actor("mia"), APPROVE, {}, PEOPLE).data_change == {"note": [None, "seen"]}
    computes = _with_vote(
        payload=None,
        copy={},
        compute={
            "note": _expr(
                "actor.id + ' for ' + case.started_by", "states", "vote", "approval", "compute", "note"
            )
        },
    )
    step = take_step(computes, VOTING, _actor("mia"), APPROVE, {}, PEOPLE)
    assert step.data_change == {"note": [None, "mia for alice"]}
    assert step.detail["computed"] == {"note": "mia for alice"}


def test_an_invalid_approval_payload_lists_its_errors() -> None:
    with pytest.raises(InvalidData) as caught:
        take_step(CompiledDefinition(DUTIES), VOTING, _actor("mia"), APPROVE, {"payer": 5}, PEOPLE)
    assert caught.value.errors == ("payer: 5 is not of type 'string'",)


def test_a_delegate_of_someone_not_by_excludes_may_not_vote() -> None:
    compiled = CompiledDefinition(DUTIES)
    checked = _replace(VOTING, fired=(("check", "max"),))
    with pytest.raises(Refused) as caught:
        take_step(compiled, checked, _actor("fay", {"manager": "max"}), APPROVE, {"payer": "fay"}, PEOPLE)
    assert caught.value.error.message == (
        "fay acts for max, who fired `check` on the case and may not vote in `vote` (separation of duties)"
    )
    assert caught.value.role == "manager"


def test_a_person_named_in_the_data_does_not_count_towards_the_rule() -> None:
    compiled = _with_vote(not_by=("data:reviewer",))
    named = _replace(VOTING, data={**VOTING.data, "reviewer": "dual"})
    first = take_step(compiled, named, _actor("mia"), REJECT, {}, PEOPLE)
    assert first.detail["outcome"] == "pending"  # max may still approve
    after = _replace(named, votes=(Vote("mia", "manager", "reject"),))
    second = take_step(compiled, after, _actor("max"), REJECT, {}, PEOPLE)
    assert second.detail["outcome"] == "rejected"  # only dual is left, and the data names dual


def test_a_pending_vote_records_the_old_value_it_changes() -> None:
    compiled = _with_vote(rule="quorum", roles=("manager",), at_least=2)
    before = _replace(VOTING, data={**VOTING.data, "tier": "large", "approved_tier": "small"})
    step = take_step(compiled, before, _actor("mia"), APPROVE, {"payer": "fay"}, PEOPLE)
    assert step.data_change == {"payer": [None, "fay"], "approved_tier": ["small", "large"]}


def test_a_stay_records_the_old_value_it_changes(sim: Simulation) -> None:
    case = started(sim, note="first")
    assert sim.fire(case, "alice", "note", {"note": "second"}).data_change == {"note": ["first", "second"]}


def test_a_computed_value_may_read_the_payload_the_person_and_the_case() -> None:
    submit = DUTIES.states["draft"].transitions[0]
    path = (*submit.path, "compute", "note")
    reads = _expr("payload.reviewer + ' by ' + actor.id + ' of ' + case.started_by", *path)
    changed = _replace(submit, compute={"note": reads})
    draft = _replace(DUTIES.states["draft"], transitions=(changed, *DUTIES.states["draft"].transitions[1:]))
    compiled = CompiledDefinition(_replace(DUTIES, states={**DUTIES.states, "draft": draft}))
    snapshot = Snapshot(state="draft", data={"title": "t", "amount": 1}, starter="bob")
    step = take_step(compiled, snapshot, _actor("bob"), "submit", {"reviewer": "mia"}, PEOPLE)
    assert step.data["note"] == "mia by bob of bob"


def test_a_start_condition_may_read_the_person_and_the_case() -> None:
    rule = DUTIES.start
    assert rule is not None
    when = _expr("actor.id != 'bob' && case.started_by == actor.id", "start", "when")
    compiled = CompiledDefinition(_replace(DUTIES, start=_replace(rule, when=when, explain=None)))
    assert start_step(compiled, _actor("alice"), {"title": "t", "amount": 1}, PEOPLE).to_state == "draft"
    with pytest.raises(GuardRefused):
        start_step(compiled, _actor("bob"), {"title": "t", "amount": 1}, PEOPLE)
