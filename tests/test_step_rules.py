"""The rules of one step (engine/step.py), each tested so that weakening it fails a test, in memory:

- `set` writes its fixed values as plain JSON and `copy` takes the payload's fields; a step whose `set` or
  `copy` would leave the data invalid against the schema is refused and changes nothing;
- who acts in which role: own roles before delegated ones, $assignee before $starter, and a delegate acts
  on behalf of the person who delegated, in an ordinary transition and in a vote (pending or completing);
- a voter holding several eligible roles takes a seat not yet filled, a delegate votes for the person who
  delegated, and one person counts once, whoever casts their vote;
- without a veto, an approval that can no longer reach its rule is rejected at once (the submitter, who
  may not vote, does not count), and while a case waits in voting its rule is still reachable.

- work distribution: least_loaded and round_robin under a role's `wip_limit` (who is passed by, ties in
  the org's order, every member at the limit, what the step records for `audit verify`), `not_by` on an
  assignment, fired_by, claims at the limit, stand-ins, entering a parallel state and its branch events.

The test beds are tests/fixtures/rules/rules.yaml with the mini org, and
tests/fixtures/rules/distribution.yaml with its own org (agents who may hold two open cases).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import (
    APPROVE,
    REJECT,
    SYSTEM,
    Approval,
    Branch,
    Definition,
    Expression,
    Org,
    State,
    Text,
)
from sopflow.engine.definition.validate import load_definition_file, load_org_file
from sopflow.engine.errors import InvalidData, NotAvailable, NotFound, NotPermitted, SopflowError
from sopflow.engine.simulate import SimCase, Simulation
from sopflow.engine.step import (
    SYSTEM_ACTOR,
    Actor,
    People,
    Refused,
    Snapshot,
    Step,
    Vote,
    actor_from_org,
    check_people,
    rule_met,
    start_step,
    take_step,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ORG = load_org_file(FIXTURES / "mini" / "org.yaml")
RULES = load_definition_file(FIXTURES / "rules" / "rules.yaml", ORG)
PEOPLE = People(ORG, lambda role: None)


class Delegating(Simulation):
    """A simulation in which some people hold roles by delegation: user → {role: who delegated it}."""

    def __init__(self, delegations: dict[str, dict[str, str]] | None = None) -> None:
        super().__init__(CompiledDefinition(RULES), ORG)
        self.delegations = delegations or {}

    def actor(self, user_id: str) -> Actor:
        return actor_from_org(self.org, user_id, self.delegations.get(user_id))


def started(sim: Simulation, **data: Any) -> SimCase:
    return sim.start("alice", {"title": "new laptop", **data})


def in_check(sim: Simulation, **data: Any) -> SimCase:
    case = started(sim, **data)
    sim.fire(case, "alice", "submit")
    return case


def in_joint(sim: Simulation, by: str = "max") -> SimCase:
    case = in_check(sim)
    sim.fire(case, by, "pass")
    assert case.state == "joint"
    return case


def in_board(sim: Simulation) -> SimCase:
    case = in_joint(sim)
    sim.fire(case, "mia", APPROVE)
    sim.fire(case, "fay", APPROVE)
    assert case.state == "board"
    return case


def unchanged(
    sim: Simulation, case: SimCase, user: str, event: str, payload: dict[str, Any] | None = None
) -> str:
    """Fire an event that must be refused with InvalidData: nothing of the case changes, no record."""
    before = (case.state, dict(case.data), len(case.history))
    with pytest.raises(InvalidData) as caught:
        sim.fire(case, user, event, payload)
    assert (case.state, dict(case.data), len(case.history)) == before
    assert caught.value.errors and caught.value.message.endswith(caught.value.errors[0])
    hint = caught.value.hint or ""
    assert hint.startswith("the definition's `set`/`copy`")
    assert hint.endswith(" and its `data` schema disagree; fix the definition")
    return caught.value.message


# -- set and copy --------------------------------------------------------------------------------------


def test_set_writes_its_fixed_values_as_plain_json() -> None:
    sim = Delegating()
    case = started(sim)
    step = sim.fire(case, "alice", "submit")
    assert (step.event, step.from_state, step.to_state, step.entered) == (
        "submit",
        "draft",
        "check",
        ("check",),
    )
    assert case.state == "check" and case.history[-1].event == "submit"
    assert dict(case.data) == {
        "title": "new laptop",
        "level": "normal",
        "tags": ["new", "checked"],
        "origin": {"channel": "form"},
        "amount": 0,
    }
    # The definition's values are frozen (tuples, read-only mappings); the data must be plain JSON.
    assert type(case.data["tags"]) is list and type(case.data["origin"]) is dict
    json.dumps(dict(case.data))
    assert step.data_change == {
        "level": [None, "normal"],
        "tags": [None, ["new", "checked"]],
        "origin": [None, {"channel": "form"}],
        "amount": [None, 0],
    }
    assert case.history[-1].data_change == step.data_change


def test_a_changed_field_records_its_old_and_new_value() -> None:
    sim = Delegating()
    case = started(sim, level="urgent", amount=7)
    step = sim.fire(case, "alice", "submit", {"amount": 7})
    assert step.data_change["level"] == ["urgent", "normal"]
    assert "amount" not in step.data_change  # set to 0, then copied back to 7: unchanged in the end
    assert "title" not in step.data_change


def test_copy_takes_the_payload_field_after_set() -> None:
    sim = Delegating()
    case = started(sim)
    step = sim.fire(case, "alice", "submit", {"amount": 120})
    assert case.data["amount"] == 120
    assert step.data_change["amount"] == [None, 120]
    assert case.history[-1].payload == {"amount": 120}


def test_a_set_the_schema_forbids_is_refused_and_changes_nothing() -> None:
    sim = Delegating()
    case = started(sim)
    message = unchanged(sim, case, "alice", "rush")
    assert "would leave the case's data invalid" in message and "express" in message


@pytest.mark.parametrize("amount", [2.5, -1])
def test_a_copy_the_schema_forbids_is_refused_and_changes_nothing(amount: float) -> None:
    sim = Delegating()
    case = started(sim)
    message = unchanged(sim, case, "alice", "submit", {"amount": amount})
    assert "would leave the case's data invalid" in message and "amount" in message


def test_a_step_that_leaves_the_data_as_it_was_is_not_checked_again() -> None:
    # Data a case was started with is valid; a step that changes nothing needs no second check, and one
    # that changes the data is checked in full, including fields it did not touch.
    sim = Delegating()
    case = in_check(sim, checker="alice")
    snapshot = Snapshot(state="check", data={"title": ""}, starter="alice", assignee="alice")
    step = take_step(sim.compiled, snapshot, sim.actor("alice"), "hand_over", {}, sim.people)
    assert step.data == {"title": ""}
    bad = Snapshot(state="draft", data={"title": ""}, starter="alice")
    with pytest.raises(InvalidData, match="title"):
        take_step(sim.compiled, bad, sim.actor("alice"), "submit", {}, sim.people)
    assert case.state == "check"


# -- who acts, in which role, for whom --------------------------------------------------------------------


def test_a_delegate_fires_an_ordinary_transition_on_behalf_of_the_delegator() -> None:
    sim = Delegating({"bob": {"finance": "fay"}})
    case = in_check(sim)
    step = sim.fire(case, "bob", "pass")
    assert (step.role, step.on_behalf_of, case.state) == ("finance", "fay", "joint")
    record = case.history[-1]
    assert (record.actor, record.role, record.on_behalf_of) == ("bob", "finance", "fay")
    assert case.snapshot.submitter == "bob"


def test_own_roles_come_before_delegated_ones() -> None:
    # `pass` is for [finance, manager]: max is a manager himself and holds finance only for fay.
    sim = Delegating({"max": {"finance": "fay"}})
    case = in_check(sim)
    step = sim.fire(case, "max", "pass")
    assert (step.role, step.on_behalf_of) == ("manager", None)
    assert case.history[-1].on_behalf_of is None


def test_the_assignee_comes_before_the_starter() -> None:
    sim = Delegating()
    case = in_check(sim, checker="alice")
    assert case.snapshot.assignee == "alice"
    assert sim.fire(case, "alice", "hand_over").role == "$assignee"
    other = in_check(sim, checker="fay")
    assert sim.fire(other, "alice", "hand_over").role == "$starter"
    assert sim.fire(other, "fay", "hand_over").role == "$assignee"
    with pytest.raises(NotPermitted, match=r"bob may not fire `hand_over`.*the case's assignee or whoever"):
        sim.fire(other, "bob", "hand_over")


def test_a_closed_case_and_an_unknown_event_change_nothing() -> None:
    sim = Delegating()
    case = started(sim)
    sim.fire(case, "alice", "cancel")
    with pytest.raises(NotAvailable, match="closed"):
        sim.fire(case, "alice", "submit")
    other = started(sim)
    with pytest.raises(NotAvailable, match=r"events here: submit, rush, cancel, sort, queue$"):
        sim.fire(other, "alice", "pass")


# -- votes: seats, delegates, one person once -------------------------------------------------------------


def votes(step: Step) -> list[tuple[str, str, str]]:
    return [(v["voter"], v["role"], v["decision"]) for v in step.detail["votes"]]


def test_a_voter_with_two_eligible_roles_takes_the_seat_still_open() -> None:
    sim = Delegating()
    case = in_joint(sim)
    sim.fire(case, "mia", APPROVE)
    step = sim.fire(case, "dual", APPROVE)
    assert votes(step) == [("mia", "manager", "approve"), ("dual", "finance", "approve")]
    assert step.role == "finance" and case.state == "board"


def test_a_voter_with_two_eligible_roles_takes_the_first_when_both_are_open() -> None:
    sim = Delegating()
    case = in_joint(sim)
    step = sim.fire(case, "dual", APPROVE)
    assert votes(step) == [("dual", "manager", "approve")] and case.state == "joint"
    assert sim.fire(case, "fay", APPROVE).role == "finance"
    assert case.state == "board"


def test_a_delegate_votes_for_the_delegator_while_the_vote_is_pending() -> None:
    sim = Delegating({"bob": {"finance": "fay"}})
    case = in_joint(sim, by="mia")
    assignee = case.snapshot.assignee
    assert assignee is not None
    step = sim.fire(case, "bob", APPROVE)
    assert votes(step) == [("fay", "finance", "approve")]
    assert (step.role, step.on_behalf_of, case.state) == ("finance", "fay", "joint")
    assert (step.event, step.from_state, step.to_state, step.entered, step.moved) == (
        "approve",
        "joint",
        "joint",
        (),
        False,
    )
    assert (step.assignee, step.data, step.data_change) == (assignee, dict(case.data), {})
    assert (case.history[-1].actor, case.history[-1].on_behalf_of) == ("bob", "fay")


def test_the_delegated_vote_that_completes_an_approval_is_on_behalf_of_the_delegator() -> None:
    sim = Delegating({"max": {"finance": "fay"}})
    case = in_joint(sim, by="dual")
    sim.fire(case, "mia", APPROVE)
    step = sim.fire(case, "max", APPROVE)
    # max is a manager himself; the manager's seat is filled, so he votes in fay's finance seat, as fay.
    assert votes(step)[-1] == ("fay", "finance", "approve")
    assert (step.role, step.on_behalf_of, case.state) == ("finance", "fay", "board")
    assert (step.event, step.from_state, step.entered) == ("approve", "joint", ("board",))
    assert step.detail["outcome"] == "approved"
    record = case.history[-1]
    assert (record.actor, record.role, record.on_behalf_of, record.to_state) == (
        "max",
        "finance",
        "fay",
        "board",
    )


def test_one_person_counts_once_whoever_casts_the_vote() -> None:
    sim = Delegating({"bob": {"finance": "fay"}})
    case = in_joint(sim, by="dual")
    sim.fire(case, "fay", APPROVE)
    error = error_of(sim, case, "bob", APPROVE)
    assert (error.message, error.hint) == (
        "fay has already voted in `joint`; one person counts once",
        "another approver must vote",
    )
    assert case.history[-1].role == "finance"
    assert (
        error_of(sim, case, "fay", REJECT).message
        == "fay has already voted in `joint`; one person counts once"
    )
    assert case.history[-1].detail == {"rule": "one-person-one-vote"}
    assert case.state == "joint"
    sim.fire(case, "mia", APPROVE)
    assert case.state == "board"


def test_a_delegate_for_the_submitter_may_not_vote() -> None:
    sim = Delegating({"bob": {"finance": "fay"}})
    case = in_joint(sim, by="fay")
    error = error_of(sim, case, "bob", APPROVE)
    assert (
        error.message
        == "bob acts for fay, who submitted this case, and may not vote on it (separation of duties)"
    )
    error = error_of(sim, case, "fay", APPROVE)
    assert (error.message, error.hint) == (
        "fay submitted this case into `joint` and may not vote on it (separation of duties)",
        "another holder of the approving role must vote",
    )
    assert (case.history[-1].role, case.history[-1].detail) == ("finance", {"rule": "separation-of-duties"})
    assert case.state == "joint"


def test_a_voter_votes_in_their_own_seat_before_a_delegated_one() -> None:
    sim = Delegating({"max": {"finance": "fay"}})
    case = in_joint(sim, by="dual")
    step = sim.fire(case, "max", APPROVE)
    assert votes(step) == [("max", "manager", "approve")]
    assert (step.role, step.on_behalf_of) == ("manager", None)


def test_with_a_veto_the_first_rejection_rejects() -> None:
    sim = Delegating()
    case = in_joint(sim)
    step = sim.fire(case, "mia", REJECT)
    assert (step.detail["outcome"], step.detail["rule"], case.state) == ("rejected", "all_of", "draft")
    assert votes(step) == [("mia", "manager", "reject")]


def test_only_holders_of_the_approving_roles_vote() -> None:
    sim = Delegating()
    case = in_joint(sim)
    with pytest.raises(NotPermitted, match="the approval needs manager or finance"):
        sim.fire(case, "alice", APPROVE)
    assert case.history[-1].detail == {"needed": ["manager", "finance"]}


# -- no veto: rejected when the rule can no longer be met ---------------------------------------------


def test_without_a_veto_rejections_reject_only_when_the_quorum_is_out_of_reach() -> None:
    sim = Delegating()
    case = in_board(sim)
    # Five board members, three needed: after two rejections three may still approve.
    sim.fire(case, "b1", REJECT)
    step = sim.fire(case, "b2", REJECT)
    assert (case.state, step.detail["outcome"]) == ("board", "pending")
    step = sim.fire(case, "b3", REJECT)
    assert (case.state, step.detail["outcome"]) == ("lost", "rejected")


def test_without_a_veto_a_rejection_does_not_stop_the_quorum() -> None:
    sim = Delegating()
    case = in_board(sim)
    sim.fire(case, "b1", REJECT)
    sim.fire(case, "b2", APPROVE)
    sim.fire(case, "b3", APPROVE)
    assert case.state == "board"
    assert sim.fire(case, "b4", APPROVE).detail["outcome"] == "approved"
    assert case.state == "done"


def test_the_submitter_who_may_not_vote_does_not_count_towards_the_quorum() -> None:
    # As if b1 had moved the case into the vote: b1 may not vote, so four members are left and two
    # rejections leave two, fewer than the three needed.
    compiled = CompiledDefinition(RULES)
    snapshot = Snapshot(state="board", data={"title": "t"}, starter="alice", submitter="b1")
    first = take_step(compiled, snapshot, actor_from_org(ORG, "b2"), REJECT, {}, PEOPLE)
    assert first.detail["outcome"] == "pending"
    after = Snapshot(
        state="board",
        data={"title": "t"},
        starter="alice",
        submitter="b1",
        votes=(Vote("b2", "board", "reject"),),
    )
    second = take_step(compiled, after, actor_from_org(ORG, "b3"), REJECT, {}, PEOPLE)
    assert (second.detail["outcome"], second.to_state) == ("rejected", "lost")
    # The same two rejections without a submitter among the members leave the quorum reachable.
    plain = Snapshot(
        state="board", data={"title": "t"}, starter="alice", votes=(Vote("b2", "board", "reject"),)
    )
    assert (
        take_step(compiled, plain, actor_from_org(ORG, "b3"), REJECT, {}, PEOPLE).detail["outcome"]
        == "pending"
    )


# -- property: a case waits in voting only while its rule can still be met --------------------------------


def _vote_definition(approval: Approval) -> Definition:
    def state(name: str, **kwargs: Any) -> State:
        return State(name=name, title=Text(name, name), path=("states", name), **kwargs)

    return Definition(
        id="vote",
        version=1,
        title=Text("投票", "Vote"),
        initial="vote",
        states={
            "vote": state("vote", approval=approval),
            "yes": state("yes", final=True),
            "no": state("no", final=True),
        },
        content_hash="0" * 64,
        file="vote.yaml",
    )


def reachable(approval: Approval, org: Org, approvers: set[str], rejecters: set[str], submitter: str) -> bool:
    """Whether the rule can still be met: by those who approved and every member who has not rejected."""
    candidates = set(approvers)
    for role in approval.roles:
        candidates.update(org.members(role))
    candidates -= rejecters
    if not approval.submitter_may_approve:
        candidates.discard(submitter)
    return rule_met(approval, candidates, People(org, lambda role: None))


RULE_ROLES = {"all_of": ("manager", "finance"), "any_of": ("manager",), "quorum": ("board",)}


@settings(max_examples=150, deadline=None, derandomize=True)
# The submitter may vote here, so they count among those who still could: one rejection leaves four.
@example(ballots=[("b2", REJECT)], rule="quorum", veto=False, submitter_may_approve=True, at_least=4)
@given(
    ballots=st.lists(
        st.tuples(st.sampled_from(sorted(ORG.users)), st.sampled_from([APPROVE, REJECT])), max_size=10
    ),
    rule=st.sampled_from(sorted(RULE_ROLES)),
    veto=st.booleans(),
    submitter_may_approve=st.booleans(),
    at_least=st.integers(min_value=1, max_value=4),
)
def test_a_case_waits_in_voting_only_while_its_rule_can_be_met(
    ballots: list[tuple[str, str]], rule: str, veto: bool, submitter_may_approve: bool, at_least: int
) -> None:
    approval = Approval(
        rule=rule,  # type: ignore[arg-type]
        roles=RULE_ROLES[rule],
        approved="yes",
        rejected="no",
        path=("states", "vote"),
        at_least=at_least,
        veto=veto,
        submitter_may_approve=submitter_may_approve,
    )
    compiled = CompiledDefinition(_vote_definition(approval))
    # b1 moved the case into the vote: with submitter_may_approve false, b1 neither votes nor counts.
    snapshot = Snapshot(state="vote", data={}, starter="alice", submitter="b1")
    approvers: set[str] = set()
    rejecters: set[str] = set()
    for user, event in ballots:
        try:
            step = take_step(compiled, snapshot, actor_from_org(ORG, user), event, {}, PEOPLE)
        except Refused:
            continue
        (approvers if event == APPROVE else rejecters).add(user)
        outcome = step.detail["outcome"]
        if outcome == "pending":
            assert step.to_state == "vote"
            assert not rule_met(approval, approvers, PEOPLE)
            assert not (veto and rejecters)
            assert reachable(approval, ORG, approvers, rejecters, "b1"), "a vote that can never end"
            snapshot = Snapshot(
                state="vote", data={}, starter="alice", submitter="b1", votes=(*snapshot.votes, _last(step))
            )
            continue
        if outcome == "approved":
            assert step.to_state == "yes" and rule_met(approval, approvers, PEOPLE)
        else:
            assert step.to_state == "no"
            assert (veto and rejecters) or not reachable(approval, ORG, approvers, rejecters, "b1")
        return


def _last(step: Step) -> Vote:
    last = step.detail["votes"][-1]
    return Vote(last["voter"], last["role"], last["decision"])


# -- every refusal names the thing and the fix ------------------------------------------------------------


def error_of(
    sim: Simulation, case: SimCase, user: str, event: str, payload: dict[str, Any] | None = None
) -> Any:
    """The error an event is refused with; the case's state and data are unchanged."""
    before = (case.state, dict(case.data), case.snapshot.assignee)
    with pytest.raises(SopflowError) as caught:
        sim.fire(case, user, event, payload)
    assert (case.state, dict(case.data), case.snapshot.assignee) == before
    return caught.value


def test_not_permitted_names_the_roles_needed_and_held() -> None:
    sim = Delegating()
    case = started(sim)
    error = error_of(sim, case, "bob", "submit")
    assert isinstance(error, NotPermitted)
    assert (error.message, error.hint) == (
        "bob may not fire `submit` in state `draft`: it needs whoever started the case",
        "bob holds employee",
    )
    record = case.history[-1]
    assert (record.outcome, record.actor, record.role, record.to_state) == ("refused", "bob", None, None)
    assert record.detail == {"needed": ["$starter"]}
    assert record.reason == "not-permitted: " + error.message
    sim.fire(case, "alice", "submit")
    error = error_of(sim, case, "dual", "hand_over")
    assert error.message == (
        "dual may not fire `hand_over` in state `check`: "
        "it needs the case's assignee or whoever started the case"
    )
    assert error.hint == "dual holds finance or manager"
    assert case.history[-1].detail == {"needed": ["$assignee", "$starter"]}
    error = error_of(sim, case, "root", "pass")
    assert error.message == "root may not fire `pass` in state `check`: it needs finance or manager"
    assert case.history[-1].detail == {"needed": ["finance", "manager"]}
    ghost = Actor(id="ghost", roles=frozenset())
    with pytest.raises(Refused) as caught:
        take_step(sim.compiled, case.snapshot, ghost, "pass", {}, sim.people)
    assert caught.value.error.hint == "ghost holds no role"
    assert str(caught.value) == str(caught.value.error)
    assert (caught.value.role, caught.value.detail) == (None, {"needed": ["finance", "manager"]})


def test_a_transition_for_nobody_says_it_needs_no_role() -> None:
    # Only a definition that skipped the checks (`no-actor`) can have one.
    draft = RULES.states["draft"]
    nobody = dataclasses.replace(draft.transitions[0], by=())
    changed = dataclasses.replace(draft, transitions=(nobody, *draft.transitions[1:]))
    compiled = CompiledDefinition(dataclasses.replace(RULES, states={**RULES.states, "draft": changed}))
    snapshot = Snapshot(state="draft", data={"title": "t"}, starter="alice")
    with pytest.raises(Refused) as caught:
        take_step(compiled, snapshot, actor_from_org(ORG, "alice"), "submit", {}, PEOPLE)
    assert caught.value.error.message == "alice may not fire `submit` in state `draft`: it needs no role"


def test_an_invalid_payload_is_refused_with_its_first_error_and_no_record() -> None:
    sim = Delegating()
    case = started(sim)
    records = len(case.history)
    error = error_of(sim, case, "alice", "submit", {"amount": "ten"})
    assert isinstance(error, InvalidData)
    assert error.message == "the payload of `submit` is not valid: amount: 'ten' is not of type 'number'"
    assert error.hint == "`submit` takes amount (* required), e.g. --data '{\"amount\": ...}'"
    assert error.errors == ("amount: 'ten' is not of type 'number'",)
    assert len(case.history) == records


def test_an_invalid_payload_hint_names_the_required_fields_first() -> None:
    sim = Delegating()
    case = in_pool(sim, 10)
    sim.fire(case, "fay", "claim")
    sim.fire(case, "fay", "to_desk")
    sim.fire(case, case.snapshot.assignee or "", "park")
    who = case.snapshot.assignee or ""
    error = error_of(sim, case, who, "close", {"note": "fine"})
    assert error.message == "the payload of `close` is not valid: 'verdict' is a required property"
    assert error.hint == "`close` takes verdict*, note (* required), e.g. --data '{\"verdict\": ...}'"
    error = error_of(sim, case, who, "park", {"note": "fine"})
    assert error.hint == "`park` takes no payload: fire it without --data"
    error = error_of(sim, case, who, "reopen", {"reason": 1})
    assert (
        error.hint == '`reopen` takes reason*, due* (* required), e.g. --data \'{"reason": ..., "due": ...}\''
    )
    error = error_of(sim, case, who, "remark", {"text": 1})
    assert error.hint == "`remark` takes text, tone (* required), e.g. --data '{\"text\": ...}'"
    assert sim.fire(case, who, "close", {"verdict": "ok"}).detail == {"payload": {"verdict": "ok"}}


def in_pool(sim: Simulation, amount: int) -> SimCase:
    case = started(sim, amount=amount)
    sim.fire(case, "alice", "queue")
    assert case.state == "pool"
    return case


def test_a_guard_refusal_gives_the_explanation_and_the_values_that_decided() -> None:
    sim = Delegating()
    case = in_pool(sim, 150)
    error = error_of(sim, case, "fay", "small")
    assert (error.kind, error.message, error.hint) == (
        "guard-refused",
        "`small` is refused in state `pool`: finance passes sums up to 100 alone (财务只能单独放行100以内)",
        "the condition is `data.amount <= 100`",
    )
    record = case.history[-1]
    assert (record.outcome, record.role) == ("refused", "finance")
    assert record.detail == {"guard": "data.amount <= 100", "values": {"amount": 150}}
    sim.fire(case, "fay", "plain")
    assert case.state == "joint"


def test_a_guard_refusal_without_an_explanation_names_the_condition() -> None:
    sim = Delegating()
    case = in_pool(sim, 250)
    error = error_of(sim, case, "fay", "plain")
    assert (error.message, error.hint) == (
        "`plain` is refused in state `pool`: the condition `data.amount <= 200` does not hold",
        "change the case's data or the payload",
    )
    assert case.history[-1].detail == {"guard": "data.amount <= 200", "values": {"amount": 250}}


def test_an_event_of_another_state_is_not_available_here() -> None:
    sim = Delegating()
    case = started(sim)
    error = error_of(sim, case, "alice", APPROVE)
    assert (error.kind, error.message, error.hint) == (
        "not-available",
        "`approve` is not an event of state `draft` (Draft (草稿))",
        "events here: submit, rush, cancel, sort, queue",
    )
    assert error_of(sim, case, "fay", "claim").kind == "not-available"
    joint = in_joint(sim)
    assert error_of(sim, joint, "mia", "submit").hint == "events here: approve, reject"
    sim.fire(case, "alice", "cancel")
    error = error_of(sim, case, "alice", "submit")
    assert (error.message, error.hint) == (
        "the case is closed: it ended in `cancelled` (Cancelled (取消))",
        "a closed case takes no more events; start a new case",
    )


# -- claims and assignees -------------------------------------------------------------------------------


def test_a_member_of_the_role_claims_a_case_once() -> None:
    sim = Delegating()
    case = in_pool(sim, 10)
    assert case.snapshot.assignee is None
    error = error_of(sim, case, "mia", "claim")
    assert error.message == "mia may not claim a case in `pool`: it needs the role finance"
    assert (case.history[-1].role, case.history[-1].detail) == (None, {"needed": ["finance"]})
    step = sim.fire(case, "fay", "claim")
    assert (step.event, step.from_state, step.to_state, step.role, step.on_behalf_of) == (
        "claim",
        "pool",
        "pool",
        "finance",
        None,
    )
    assert (step.assignee, step.detail, step.data_change, step.entered) == (
        "fay",
        {"claimed_by": "fay"},
        {},
        (),
    )
    assert not step.moved
    assert step.data == dict(case.data) and case.snapshot.assignee == "fay"
    error = error_of(sim, case, "dual", "claim")
    assert (error.message, error.hint) == (
        "the case is already claimed by fay",
        "ask the role's manager to reassign it",
    )
    assert (case.history[-1].role, case.history[-1].detail) == ("finance", {"assignee": "fay"})
    assert sim.fire(case, "fay", "to_desk").role == "$assignee"


def test_a_delegate_claims_on_behalf_of_the_delegator() -> None:
    sim = Delegating({"bob": {"finance": "fay"}})
    case = in_pool(sim, 10)
    step = sim.fire(case, "bob", "claim")
    assert (step.role, step.on_behalf_of, step.assignee) == ("finance", "fay", "bob")


def test_the_least_loaded_member_is_assigned() -> None:
    snapshot = Snapshot(state="pool", data={"title": "t", "amount": 1}, starter="alice", assignee="fay")
    people = People(ORG, lambda role: {"manager": "max"}[role])
    step = take_step(CompiledDefinition(RULES), snapshot, actor_from_org(ORG, "fay"), "to_desk", {}, people)
    assert (step.to_state, step.assignee) == ("desk", "max")
    assert step.detail == {"assignee": "max"}  # the load of other cases decided it: recorded for replay


def test_an_assignee_from_the_data_must_be_a_user_of_the_org() -> None:
    sim = Delegating()
    case = in_check(sim, checker="fay")
    assert case.snapshot.assignee == "fay"
    assert in_check(sim).snapshot.assignee is None
    bad = started(sim, checker=5)
    error = error_of(sim, bad, "alice", "submit")
    assert (error.kind, error.message) == ("invalid-data", "data field `checker` must hold a user id, not 5")
    unknown = started(sim, checker="nobody")
    error = error_of(sim, unknown, "alice", "submit")
    assert (error.message, error.hint) == (
        "data field `checker` names `nobody`, who is not in the org",
        "use a user id from org.yaml",
    )


# -- choices ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "entered", "when", "values"),
    [
        (
            {"amount": 500, "level": "urgent"},
            ("sorter", "joint"),
            "data.amount > 100 && data.level == 'urgent'",
            {"amount": 500, "level": "urgent"},
        ),
        ({"amount": 80}, ("sorter", "check"), "data.amount > 50", {"amount": 80, "level": None}),
        ({"amount": 10}, ("sorter", "pool"), "else", {"amount": 10, "level": None, "title": "new laptop"}),
    ],
)
def test_a_choice_routes_at_once_and_records_what_decided(
    data: dict[str, Any], entered: tuple[str, ...], when: str, values: dict[str, Any]
) -> None:
    sim = Delegating()
    case = started(sim, **data)
    step = sim.fire(case, "alice", "sort")
    assert (step.entered, step.to_state, case.state) == (entered, entered[-1], entered[-1])
    routes = [{"choice": "sorter", "to": entered[-1], "when": when, "values": values}]
    # The joint approval's assignee is the least loaded manager: that pick is recorded too.
    expected = {"routes": routes, **({"assignee": "mia"} if entered[-1] == "joint" else {})}
    assert step.detail == expected
    assert case.history[-1].detail == expected


def _with_sorter(*branches: Branch) -> CompiledDefinition:
    """The rules with the choice `sorter` given other branches, as if the checks had been skipped."""
    sorter = dataclasses.replace(RULES.states["sorter"], choice=branches)
    return CompiledDefinition(dataclasses.replace(RULES, states={**RULES.states, "sorter": sorter}))


def test_a_choice_without_a_branch_for_the_data_is_invalid_data() -> None:
    first = RULES.states["sorter"].choice[0]
    compiled = _with_sorter(first)
    snapshot = Snapshot(state="draft", data={"title": "t", "amount": 1}, starter="alice")
    with pytest.raises(InvalidData) as caught:
        take_step(compiled, snapshot, actor_from_org(ORG, "alice"), "sort", {}, PEOPLE)
    assert caught.value.message == "choice state `sorter` has no branch for this data (no `else`)"


def test_choices_that_route_in_a_loop_are_stopped() -> None:
    compiled = _with_sorter(Branch(target="sorter", path=("states", "sorter", "choice", 0)))
    snapshot = Snapshot(state="draft", data={"title": "t", "amount": 1}, starter="alice")
    with pytest.raises(InvalidData) as caught:
        take_step(compiled, snapshot, actor_from_org(ORG, "alice"), "sort", {}, PEOPLE)
    loop = " → ".join(["sorter"] * (len(RULES.states) + 1))
    assert caught.value.message == f"choice states route in a loop: {loop}"


# -- starting a case -------------------------------------------------------------------------------------


def test_a_case_starts_with_valid_data_in_the_starters_first_role() -> None:
    sim = Delegating()
    case = sim.start("dual", {"title": "t"})
    record = case.history[0]
    assert (record.event, record.from_state, record.to_state, record.role) == (
        "start",
        None,
        "draft",
        "finance",
    )
    assert (record.actor, record.on_behalf_of, record.data_change) == ("dual", None, {"title": [None, "t"]})
    assert case.snapshot.starter == "dual" and case.snapshot.submitter == "dual"
    with pytest.raises(InvalidData) as caught:
        sim.start("alice", [1])  # type: ignore[arg-type]
    assert (caught.value.message, caught.value.hint) == (
        "a case's data must be a JSON object",
        'e.g. --data \'{"title": "..."}\'',
    )
    with pytest.raises(InvalidData) as caught:
        sim.start("alice", {"title": ""})
    assert (caught.value.message, caught.value.hint) == (
        "the data does not fit rules@1: title: '' should be non-empty",
        "`sopflow defs show ID` lists the fields a case needs",
    )
    assert caught.value.errors == ("title: '' should be non-empty",)
    nobody = Actor(id="ghost", roles=frozenset())
    assert start_step(sim.compiled, nobody, {"title": "t"}, sim.people).role is None


def test_a_start_routes_through_a_choice_and_assigns() -> None:
    compiled = CompiledDefinition(dataclasses.replace(RULES, initial="sorter"))
    step = start_step(
        compiled, actor_from_org(ORG, "alice"), {"title": "t", "amount": 60, "checker": "fay"}, PEOPLE
    )
    assert (step.from_state, step.entered, step.to_state, step.assignee) == (
        "",
        ("sorter", "check"),
        "check",
        "fay",
    )


# -- people ----------------------------------------------------------------------------------------------


def test_an_unknown_user_is_not_found_with_a_suggestion() -> None:
    with pytest.raises(NotFound) as caught:
        actor_from_org(ORG, "alcie")
    assert (caught.value.message, caught.value.hint) == (
        "user `alcie` is not in the org `mini-co`",
        "did you mean `alice`?",
    )
    with pytest.raises(NotFound) as caught:
        actor_from_org(ORG, "zzzzzz")
    assert caught.value.hint == "pass a user id from org.yaml with --as"


def test_an_actor_holds_their_own_roles_and_the_delegated_ones() -> None:
    max_ = actor_from_org(ORG, "max", {"finance": "fay", "manager": "mia"})
    assert (max_.id, max_.roles, max_.department) == ("max", frozenset({"manager", "finance"}), "office")
    assert max_.delegated == {"finance": "fay"}  # his own role is not held for anyone
    assert max_.guard_view() == {"id": "max", "roles": ["finance", "manager"], "department": "office"}
    root = actor_from_org(ORG, "root")
    assert root.guard_view() == {"id": "root", "roles": ["admin"], "department": ""}
    assert actor_from_org(ORG, "alice").delegated == {}


def test_all_of_needs_a_different_person_for_each_role() -> None:
    joint = RULES.states["joint"].approval
    assert joint is not None
    assert not rule_met(joint, {"dual"}, PEOPLE)  # one person, two roles: one seat
    assert not rule_met(joint, {"mia", "max"}, PEOPLE)
    assert rule_met(joint, {"dual", "mia"}, PEOPLE)  # dual must move to the finance seat
    assert rule_met(joint, {"dual", "fay"}, PEOPLE)
    assert rule_met(joint, {"mia", "fay", "alice"}, PEOPLE)
    any_of = dataclasses.replace(joint, rule="any_of")
    assert rule_met(any_of, {"fay"}, PEOPLE) and not rule_met(any_of, {"alice"}, PEOPLE)
    board = RULES.states["board"].approval
    assert board is not None
    assert rule_met(board, {"b1", "b2", "b3"}, PEOPLE) and not rule_met(board, {"b1", "b2", "mia"}, PEOPLE)


def test_alternatives_are_tried_in_order_and_the_first_that_holds_wins() -> None:
    sim = Delegating()
    assert [t.target for t in sim.compiled.alternatives("check", "size_up")] == ["joint", "board"]
    big = started(sim)
    sim.fire(big, "alice", "submit", {"amount": 500})
    assert sim.fire(big, "fay", "size_up").to_state == "joint"
    small = in_check(sim)
    assert sim.fire(small, "fay", "size_up").to_state == "board"


def test_a_state_without_events_says_so() -> None:
    # Only a definition that skipped the checks (a dead end is `cannot-finish`) can have one.
    check = dataclasses.replace(RULES.states["check"], transitions=())
    compiled = CompiledDefinition(dataclasses.replace(RULES, states={**RULES.states, "check": check}))
    snapshot = Snapshot(state="check", data={"title": "t"}, starter="alice")
    with pytest.raises(NotAvailable) as caught:
        take_step(compiled, snapshot, actor_from_org(ORG, "fay"), "pass", {}, PEOPLE)
    assert caught.value.hint == "events here: none"


def test_a_choice_may_route_by_the_acting_person() -> None:
    first = RULES.states["sorter"].choice[0]
    by_person = Branch(
        target="joint", path=first.path, when=Expression("actor.id == 'alice'", (*first.path, "when"))
    )
    rest = RULES.states["sorter"].choice[1:]
    compiled = _with_sorter(by_person, *rest)
    snapshot = Snapshot(state="draft", data={"title": "t", "amount": 1}, starter="alice")
    step = take_step(compiled, snapshot, actor_from_org(ORG, "alice"), "sort", {}, PEOPLE)
    assert step.entered == ("sorter", "joint")


# -- starting the work of a state ---------------------------------------------------------------------------


def test_only_the_assignee_starts_the_work_and_it_stays() -> None:
    sim = Delegating()
    pool = in_pool(sim, 10)
    error = error_of(sim, pool, "fay", "start_work")
    assert (error.message, error.hint) == (
        "nobody holds the work of `pool` yet: it is started by its assignee",
        "claim it first",
    )
    assert (pool.history[-1].role, pool.history[-1].detail) == (None, {"needed": ["$assignee"]})
    unassigned = in_check(sim)
    assert error_of(sim, unassigned, "alice", "start_work").hint == "assign it first"
    case = in_check(sim, checker="fay")
    error = error_of(sim, case, "bob", "start_work")
    assert (error.message, error.hint) == (
        "bob may not start the work of `check`: it is fay's",
        "the assignee starts it; a manager may reassign it",
    )
    assert (case.history[-1].role, case.history[-1].detail) == (None, {"needed": ["$assignee"]})
    step = sim.fire(case, "fay", "start_work")
    assert (step.event, step.from_state, step.to_state, step.role, step.on_behalf_of) == (
        "start_work",
        "check",
        "check",
        "$assignee",
        None,
    )
    assert (step.data, step.data_change, step.entered, step.assignee, step.detail) == (
        dict(case.data),
        {},
        (),
        "fay",
        {"started_by": "fay"},
    )
    assert case.state == "check" and case.snapshot.assignee == "fay"


# Work distribution: round_robin and least_loaded under a role's wip_limit, `not_by` on an assignment,
# fired_by and claims, with tests/fixtures/rules/distribution.yaml (agents a1, a2, a3 may hold 2 cases).
DESK_ORG = load_org_file(FIXTURES / "rules" / "distribution-org.yaml")
DESK = CompiledDefinition(load_definition_file(FIXTURES / "rules" / "distribution.yaml", DESK_ORG))
R1 = actor_from_org(DESK_ORG, "r1")


def desk_people(
    held: dict[str, int] | None = None,
    *,
    last: str | None = None,
    least: str | None = "m2",
    least_of: list[list[str]] | None = None,
) -> People:
    """The org with each person's open cases (`held`; None: not counted, a dry run), the member a
    round-robin state last gave a case to, the least loaded of a role and, when `least_of` is a list,
    the least loaded of some people (the last of them; what it was asked is appended)."""

    def least_loaded_of(members: Any) -> str | None:
        assert least_of is not None
        least_of.append(list(members))
        return list(members)[-1] if members else None

    return People(
        DESK_ORG,
        lambda role: least,
        open_cases=None if held is None else (lambda person: held[person]),
        least_loaded_of=None if least_of is None else least_loaded_of,
        last_turn=lambda state: last,
    )


def desk_step(
    event: str,
    people: People,
    *,
    state: str = "new",
    actor: Actor = R1,
    assignee: str | None = None,
    fired: tuple[tuple[str, str], ...] = (),
) -> Step:
    snapshot = Snapshot(state, {}, "r1", assignee=assignee, fired=fired)
    return take_step(DESK, snapshot, actor, event, {}, people)


@pytest.mark.parametrize(
    ("held", "given"),
    [
        ({"a1": 1, "a2": 0, "a3": 1}, "a2"),
        ({"a1": 1, "a2": 1, "a3": 0}, "a3"),
        ({"a1": 0, "a2": 0, "a3": 0}, "a1"),  # a tie goes to the first in the org's order
        ({"a1": 2, "a2": 1, "a3": 1}, "a2"),
    ],
)
def test_least_loaded_under_a_wip_limit_gives_the_case_to_who_holds_least(
    held: dict[str, int], given: str
) -> None:
    step = desk_step("to_least", desk_people(held, least="a3"))
    assert (step.to_state, step.assignee) == ("least", given)
    assert step.detail["assignee"] == given
    assert step.detail["wip"] == {"limit": 2, "held": held}


def test_a_member_at_the_wip_limit_is_passed_by_even_when_others_hold_as_much() -> None:
    # a1 and a3 are at the limit; a2 is the only one under it although a1 comes first.
    step = desk_step("to_least", desk_people({"a1": 2, "a2": 1, "a3": 3}))
    assert step.assignee == "a2"
    assert "over_limit" not in step.detail["wip"]


def test_when_every_member_is_at_the_wip_limit_the_least_loaded_gets_it_over_the_limit() -> None:
    held = {"a1": 4, "a2": 2, "a3": 3}
    step = desk_step("to_least", desk_people(held))
    assert step.assignee == "a2"
    assert step.detail["wip"] == {"limit": 2, "held": held, "over_limit": True}
    assert step.detail["assignee"] == "a2"


def test_without_counts_least_loaded_asks_the_runtime_and_records_no_wip() -> None:
    step = desk_step("to_least", desk_people(None, least="a3"))
    assert step.assignee == "a3"
    assert step.detail == {"assignee": "a3"}


def test_a_role_without_a_wip_limit_asks_the_runtime_for_the_least_loaded() -> None:
    step = desk_step("to_desk", desk_people({"m1": 0, "m2": 5}, least="m2"))
    assert (step.to_state, step.assignee) == ("desk", "m2")
    assert step.detail == {"assignee": "m2"}


@pytest.mark.parametrize(
    ("last", "given"),
    [(None, "a1"), ("a1", "a2"), ("a2", "a3"), ("a3", "a1"), ("gone", "a1")],
)
def test_round_robin_gives_the_case_to_the_member_after_the_last_one(last: str | None, given: str) -> None:
    step = desk_step("to_turn", desk_people(None, last=last, least="a3"))
    assert (step.to_state, step.assignee) == ("turn", given)
    assert step.detail == {"assignee": given}


def test_round_robin_passes_by_a_member_at_the_wip_limit() -> None:
    held = {"a1": 0, "a2": 2, "a3": 1}
    step = desk_step("to_turn", desk_people(held, last="a1"))
    assert step.assignee == "a3"
    assert step.detail == {"assignee": "a3", "wip": {"limit": 2, "held": held}}
    # After a3 the turn wraps round to a1, passing a2 by.
    step = desk_step("to_turn", desk_people(held, last="a3"))
    assert step.assignee == "a1"


def test_round_robin_when_every_member_is_at_the_limit_keeps_the_turn() -> None:
    held = {"a1": 2, "a2": 3, "a3": 2}
    step = desk_step("to_turn", desk_people(held, last="a1"))
    assert step.assignee == "a2"
    assert step.detail["wip"] == {"limit": 2, "held": held, "over_limit": True}


def test_a_role_with_no_members_gives_the_case_to_nobody() -> None:
    step = desk_step("to_vacant", desk_people({}, last="a1"))
    assert (step.to_state, step.assignee) == ("vacant", None)
    assert step.detail == {"assignee": None}


def test_an_assignment_passes_by_whoever_not_by_names() -> None:
    # a1 handled the case: checking it goes to someone else, the first other member without counts.
    step = desk_step(
        "handle", desk_people(None, least="a1"), state="least", actor=_agent("a1"), assignee="a1"
    )
    assert (step.to_state, step.assignee) == ("check", "a2")
    asked: list[list[str]] = []
    step = desk_step(
        "handle", desk_people(None, least_of=asked), state="least", actor=_agent("a1"), assignee="a1"
    )
    assert asked == [["a2", "a3"]]
    assert step.assignee == "a3"
    # Earlier steps count too: a2 handled it before, a3 now; only a1 is left.
    step = desk_step(
        "handle",
        desk_people({"a1": 1, "a2": 0, "a3": 0}),
        state="redo",
        actor=_agent("a3"),
        assignee="a3",
        fired=(("handle", "a2"),),
    )
    assert step.assignee == "a1"
    assert step.detail["wip"] == {"limit": 2, "held": {"a1": 1}}


def test_not_by_and_the_wip_limit_together_pick_the_least_loaded_of_the_others() -> None:
    held = {"a2": 2, "a3": 1}
    step = desk_step(
        "handle", desk_people({"a1": 0, **held}), state="least", actor=_agent("a1"), assignee="a1"
    )
    assert step.assignee == "a3"
    assert step.detail == {"assignee": "a3", "wip": {"limit": 2, "held": held}}


def test_when_not_by_passes_everyone_by_nobody_is_given_the_case() -> None:
    one_agent = dataclasses.replace(
        DESK_ORG, users={k: v for k, v in DESK_ORG.users.items() if k != "a2" and k != "a3"}
    )
    people = dataclasses.replace(desk_people(None, least_of=[]), org=one_agent)
    step = desk_step("handle", people, state="least", actor=_agent("a1"), assignee="a1")
    assert step.assignee is None
    people = dataclasses.replace(desk_people(None), org=one_agent)
    assert desk_step("handle", people, state="least", actor=_agent("a1"), assignee="a1").assignee is None


def test_fired_by_gives_the_case_back_to_whoever_fired_the_event_last() -> None:
    fired = (("handle", "a1"), ("handle", "a2"))
    step = desk_step("back", desk_people(None), state="check", actor=_agent("a3"), assignee="a3", fired=fired)
    assert (step.to_state, step.assignee) == ("redo", "a2")
    assert "assignee" not in step.detail


def _agent(user: str, delegated: dict[str, str] | None = None) -> Actor:
    return actor_from_org(DESK_ORG, user, delegated)


def test_a_claim_under_the_wip_limit_records_what_the_claimant_held() -> None:
    step = desk_step("claim", desk_people({"a1": 1}), state="pool", actor=_agent("a1"))
    assert (step.event, step.to_state, step.assignee, step.role) == ("claim", "pool", "a1", "agent")
    assert step.detail == {"claimed_by": "a1", "held": 1}
    assert step.entered == ()
    # Without counts (a dry run) nothing is held against the limit.
    step = desk_step("claim", desk_people(None), state="pool", actor=_agent("a1"))
    assert step.detail == {"claimed_by": "a1"}


@pytest.mark.parametrize("held", [2, 3])
def test_a_claim_at_the_wip_limit_is_refused_and_says_so(held: int) -> None:
    with pytest.raises(Refused) as caught:
        desk_step("claim", desk_people({"a1": held}), state="pool", actor=_agent("a1"))
    refused = caught.value
    assert isinstance(refused.error, NotPermitted)
    assert refused.error.message == (
        f"a1 holds {held} open case(s), the most a agent may hold at once (wip_limit 2)"
    )
    assert refused.error.hint == "finish one, or hand one on (reassign), before claiming another"
    assert refused.role == "agent"
    assert refused.detail == {"rule": "wip-limit", "held": held, "limit": 2}


def test_a_claim_is_passed_by_for_whoever_not_by_names() -> None:
    starter = Snapshot("pool", {}, "a1")
    with pytest.raises(Refused) as caught:
        take_step(DESK, starter, _agent("a1"), "claim", {}, desk_people({"a1": 0}))
    assert caught.value.error.message == (
        "a1 started the case and may not claim a case in `pool` (separation of duties)"
    )
    assert caught.value.detail == {"rule": "separation-of-duties", "excluded": ["$starter"]}
    step = take_step(DESK, starter, _agent("a2"), "claim", {}, desk_people({"a2": 0}))
    assert step.assignee == "a2"


def test_a_stand_in_acts_as_the_assignee_on_behalf_of_the_absent_one() -> None:
    # a1 is away and delegated the agent role to a2, who holds it already: a2 stands in on a1's cases.
    stand_in = _agent("a2", {"agent": "a1"})
    step = desk_step("start_work", desk_people(None), state="least", actor=stand_in, assignee="a1")
    assert (step.role, step.on_behalf_of, step.assignee, step.detail) == (
        "$assignee",
        "a1",
        "a1",
        {"started_by": "a2"},
    )
    # Handling it is a1's step: a1 is passed by for the check, a2 (who only stood in) is not.
    asked: list[list[str]] = []
    step = desk_step(
        "handle", desk_people(None, least_of=asked), state="least", actor=stand_in, assignee="a1"
    )
    assert (step.role, step.on_behalf_of, asked) == ("$assignee", "a1", [["a2", "a3"]])


@pytest.mark.parametrize(
    ("user", "delegated", "assignee"),
    [("a3", None, "a1"), ("a2", {"manager": "m1"}, "a1"), ("a2", {"agent": "a1"}, None)],
)
def test_nobody_stands_in_for_an_assignee_who_did_not_delegate_to_them(
    user: str, delegated: dict[str, str] | None, assignee: str | None
) -> None:
    actor = _agent(user, delegated)
    with pytest.raises(Refused) as caught:
        desk_step("start_work", desk_people(None), state="least", actor=actor, assignee=assignee)
    assert caught.value.detail == {"needed": ["$assignee"]}


def test_own_work_is_started_on_nobodys_behalf() -> None:
    stand_in = _agent("a2", {"agent": "a1"})
    step = desk_step("start_work", desk_people(None), state="least", actor=stand_in, assignee="a2")
    assert (step.on_behalf_of, step.detail) == (None, {"started_by": "a2"})


def test_a_user_field_must_name_a_person_of_the_org_holding_its_role() -> None:
    fields = {"agent": "agent", "anyone": None}
    check_people(fields, {"agent": "a1", "anyone": "m1", "other": "zz"}, DESK_ORG, "data field")
    with pytest.raises(InvalidData) as caught:
        check_people(fields, {"agent": "zz"}, DESK_ORG, "data field")
    assert (caught.value.message, caught.value.hint) == (
        "data field `agent` names 'zz', who is not a person of the org `desk-co`",
        "give a user id of a member of agent: a1, a2, a3",
    )
    with pytest.raises(InvalidData) as caught:
        check_people(fields, {"anyone": 7}, DESK_ORG, "payload field")
    assert (caught.value.message, caught.value.hint) == (
        "payload field `anyone` names 7, who is not a person of the org `desk-co`",
        "give a user id from the org",
    )
    with pytest.raises(InvalidData) as caught:
        check_people(fields, {"agent": "m1"}, DESK_ORG, "data field")
    assert (caught.value.message, caught.value.hint) == (
        "data field `agent` names m1, who does not hold the role agent",
        "give a member of agent: a1, a2, a3",
    )
    with pytest.raises(InvalidData) as caught:
        check_people({"vacant": "nobody"}, {"vacant": "m1"}, DESK_ORG, "data field")
    assert caught.value.hint == "give a member of nobody: the role has none"
    # Only the fields named are checked when names are given.
    check_people(fields, {"agent": "zz", "anyone": "m1"}, DESK_ORG, "data field", ["anyone"])
    with pytest.raises(InvalidData):
        check_people(fields, {"agent": "zz", "anyone": "m1"}, DESK_ORG, "data field", ["agent"])
    # A list of people: each item is a person of the org, holding the items' role when they name one.
    lists = {"team": None, "agents": "agent"}
    check_people({}, {"team": ["m1", "a1"], "agents": ["a1", "a2"]}, DESK_ORG, "data field", lists=lists)
    with pytest.raises(InvalidData) as caught:
        check_people({}, {"team": ["m1", "zz"]}, DESK_ORG, "data field", lists=lists)
    assert (
        caught.value.message
        == "data field `team` (item 2) names 'zz', who is not a person of the org `desk-co`"
    )
    with pytest.raises(InvalidData, match=r"`agents` \(item 1\) names m1, who does not hold the role agent"):
        check_people({}, {"agents": ["m1"]}, DESK_ORG, "data field", lists=lists)
    check_people({}, {"team": ["zz"], "agents": ["a1"]}, DESK_ORG, "data field", ["agents"], lists)


def test_a_person_from_the_org_holds_their_roles_and_those_delegated_to_them() -> None:
    actor = actor_from_org(DESK_ORG, "a2", {"agent": "a1", "manager": "m1"})
    assert (actor.id, actor.roles, actor.delegated, actor.stands_in_for) == (
        "a2",
        frozenset({"agent", "manager"}),
        {"manager": "m1"},
        frozenset({"a1", "m1"}),
    )
    assert actor_from_org(DESK_ORG, "a2").stands_in_for == frozenset()


def test_entering_a_parallel_state_records_where_each_branch_starts_and_who_holds_it() -> None:
    org = load_org_file(FIXTURES / "branches" / "org.yaml")
    launch = CompiledDefinition(load_definition_file(FIXTURES / "branches" / "launch.yaml", org))
    snapshot = Snapshot("draft", {"title": "fair", "venue_lead": "mia"}, "alice")
    step = take_step(
        launch, snapshot, actor_from_org(org, "alice"), "plan", {}, People(org, lambda role: "max")
    )
    assert (step.to_state, step.entered, step.assignee) == ("preparing", ("preparing",), None)
    assert step.detail == {
        "branches": {
            "materials": {"state": "ordering", "assignee": None},
            "venue": {"state": "booking", "assignee": "mia"},
            "staffing": {"state": "staffing", "assignee": None},
        }
    }


def test_a_branch_event_of_a_parallel_state_is_decided_in_its_branch() -> None:
    org = load_org_file(FIXTURES / "branches" / "org.yaml")
    launch = CompiledDefinition(load_definition_file(FIXTURES / "branches" / "launch.yaml", org))
    at = {
        "materials": {"state": "ordering", "assignee": None},
        "venue": {"state": "booking", "assignee": "mia"},
        "staffing": {"state": "staffing", "assignee": None},
    }
    snapshot = Snapshot("preparing", {"title": "fair", "venue_lead": "mia"}, "alice", branches=at)
    people = People(org, lambda role: None)
    step = take_step(launch, snapshot, actor_from_org(org, "fay"), "ordered", {"budget": 5}, people)
    assert (step.event, step.to_state, step.role, step.data_change) == (
        "materials.ordered",
        "preparing",
        "finance",
        {"budget": [None, 5]},
    )
    assert step.detail["branch"] == "materials"
    assert step.detail["branches"]["materials"] == {"state": "receiving", "assignee": None}


def test_fired_by_gives_the_case_to_nobody_when_nobody_fired_the_event() -> None:
    step = desk_step("back", desk_people(None), state="check", actor=_agent("a3"), assignee="a3")
    assert (step.to_state, step.assignee) == ("redo", None)


def test_round_robin_without_a_known_last_turn_starts_with_the_first_member() -> None:
    people = dataclasses.replace(desk_people(None), last_turn=None)
    assert desk_step("to_turn", people).assignee == "a1"
    # The last turn is asked for by the state's name.
    turns = {"turn": "a2"}
    people = dataclasses.replace(desk_people(None), last_turn=turns.get)
    assert desk_step("to_turn", people).assignee == "a3"


def test_an_assignment_passes_by_the_starter_and_the_person_named_in_the_data() -> None:
    snapshot = Snapshot("new", {"lead": "a2"}, "a1")
    step = take_step(DESK, snapshot, _agent("a1"), "to_review", {}, desk_people(None, least_of=[]))
    assert (step.to_state, step.assignee) == ("review", "a3")
    step = take_step(DESK, snapshot, _agent("a1"), "to_review", {}, desk_people({"a3": 5}))
    assert step.assignee == "a3"
    assert step.detail["wip"] == {"limit": 2, "held": {"a3": 5}, "over_limit": True}


def test_a_delegate_of_the_starter_may_not_claim_for_them() -> None:
    # m1 holds the agent role only by a1's delegation: claiming, m1 acts for a1, who started the case.
    delegate = _agent("m1", {"agent": "a1"})
    with pytest.raises(Refused) as caught:
        take_step(DESK, Snapshot("pool", {}, "a1"), delegate, "claim", {}, desk_people({"m1": 0, "a1": 0}))
    assert caught.value.error.message == (
        "m1 acts for a1, who started the case and may not claim a case in `pool` (separation of duties)"
    )


def test_a_user_field_holding_something_other_than_a_name_is_refused() -> None:
    with pytest.raises(InvalidData) as caught:
        check_people({"agent": "agent"}, {"agent": ["a1"]}, DESK_ORG, "data field")
    assert caught.value.message == "data field `agent` names ['a1'], who is not a person of the org `desk-co`"


def test_a_user_field_hint_names_at_most_ten_members_of_the_role() -> None:
    a1 = DESK_ORG.users["a1"]
    many = {f"z{i:02}": dataclasses.replace(a1, id=f"z{i:02}") for i in range(12)}
    org = dataclasses.replace(DESK_ORG, users={**DESK_ORG.users, **many})
    ten = ", ".join(org.members("agent")[:10])
    assert len(org.members("agent")) == 15
    with pytest.raises(InvalidData) as caught:
        check_people({"agent": "agent"}, {"agent": "zz"}, org, "data field")
    assert caught.value.hint == f"give a user id of a member of agent: {ten}"
    with pytest.raises(InvalidData) as caught:
        check_people({"agent": "agent"}, {"agent": "m1"}, org, "data field")
    assert caught.value.hint == f"give a member of agent: {ten}"


def test_the_system_is_never_passed_by_even_when_it_fired_the_event_not_by_names() -> None:
    # The clock handled the case earlier (a timeout); `not_by: [fired:handle]` still lets it expire it.
    snapshot = Snapshot("check", {}, "r1", assignee="a2", fired=(("handle", SYSTEM),))
    step = take_step(DESK, snapshot, SYSTEM_ACTOR, "expire", {}, desk_people(None))
    assert (step.to_state, step.role) == ("closed", SYSTEM)


@pytest.mark.parametrize(("starter", "routed"), [("r1", "desk"), ("a1", "least")])
def test_a_choice_routes_by_what_it_reads_of_the_case(starter: str, routed: str) -> None:
    snapshot = Snapshot("new", {}, starter)
    step = take_step(
        DESK, snapshot, actor_from_org(DESK_ORG, starter), "triage", {}, desk_people(None, least="m1")
    )
    assert step.entered == ("triage", routed)
    assert step.detail["routes"][0]["when"] == ("case.started_by == 'r1'" if routed == "desk" else "else")


def test_a_parallel_states_own_event_leaves_it_whatever_its_branches_hold() -> None:
    org = load_org_file(FIXTURES / "branches" / "org.yaml")
    launch = CompiledDefinition(load_definition_file(FIXTURES / "branches" / "launch.yaml", org))
    at = {
        "materials": {"state": "receiving", "assignee": None},
        "venue": {"state": "booking", "assignee": "mia"},
        "staffing": {"state": "done", "assignee": None},
    }
    snapshot = Snapshot("preparing", {"title": "fair", "venue_lead": "mia"}, "alice", branches=at)
    step = take_step(
        launch, snapshot, actor_from_org(org, "max"), "abandon", {}, People(org, lambda role: None)
    )
    assert (step.event, step.from_state, step.to_state, step.role) == (
        "abandon",
        "preparing",
        "abandoned",
        "manager",
    )
    assert step.entered == ("abandoned",)


def test_a_branch_transitions_computed_value_is_checked_against_its_payload_schema() -> None:
    split = DESK.definition.states["split"].parallel
    assert split is not None
    looked = split.branches["second"].states["looking"].transitions[0]
    expr = looked.compute["lead"]
    assert DESK.guard(expr).text == "payload.verdict"
    bad = dataclasses.replace(expr, text="payload.nothing")
    changed = dataclasses.replace(looked, compute={"lead": bad})
    branch = split.branches["second"]
    looking = dataclasses.replace(branch.states["looking"], transitions=(changed,))
    branches = {"second": dataclasses.replace(branch, states={**branch.states, "looking": looking})}
    states = {
        **DESK.definition.states,
        "split": dataclasses.replace(
            DESK.definition.states["split"], parallel=dataclasses.replace(split, branches=branches)
        ),
    }
    with pytest.raises(SopflowError, match="unknown-field"):
        CompiledDefinition(dataclasses.replace(DESK.definition, states=states)).guard(bad)
