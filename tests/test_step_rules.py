"""The rules of one step (engine/step.py), each tested so that weakening it fails a test, in memory:

- `set` writes its fixed values as plain JSON and `copy` takes the payload's fields; a step whose `set` or
  `copy` would leave the data invalid against the schema is refused and changes nothing;
- who acts in which role: own roles before delegated ones, $assignee before $starter, and a delegate acts
  on behalf of the person who delegated, in an ordinary transition and in a vote (pending or completing);
- a voter holding several eligible roles takes a seat not yet filled, a delegate votes for the person who
  delegated, and one person counts once, whoever casts their vote;
- without a veto, an approval that can no longer reach its rule is rejected at once (the submitter, who
  may not vote, does not count), and while a case waits in voting its rule is still reachable.

The test bed is tests/fixtures/rules/rules.yaml with the mini org.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import APPROVE, REJECT, Approval, Definition, Org, State, Text
from sopflow.engine.definition.validate import load_definition_file, load_org_file
from sopflow.engine.errors import InvalidData, NotAvailable, NotPermitted
from sopflow.engine.simulate import SimCase, Simulation
from sopflow.engine.step import (
    Actor,
    People,
    Refused,
    Snapshot,
    Step,
    Vote,
    actor_from_org,
    rule_met,
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
    return caught.value.message


# -- set and copy --------------------------------------------------------------------------------------


def test_set_writes_its_fixed_values_as_plain_json() -> None:
    sim = Delegating()
    case = started(sim)
    step = sim.fire(case, "alice", "submit")
    assert case.state == "check"
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
    with pytest.raises(NotAvailable, match=r"events here: submit, rush, cancel"):
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
    step = sim.fire(case, "bob", APPROVE)
    assert votes(step) == [("fay", "finance", "approve")]
    assert (step.role, step.on_behalf_of, case.state) == ("finance", "fay", "joint")
    assert (case.history[-1].actor, case.history[-1].on_behalf_of) == ("bob", "fay")


def test_the_delegated_vote_that_completes_an_approval_is_on_behalf_of_the_delegator() -> None:
    sim = Delegating({"max": {"finance": "fay"}})
    case = in_joint(sim, by="dual")
    sim.fire(case, "mia", APPROVE)
    step = sim.fire(case, "max", APPROVE)
    # max is a manager himself; the manager's seat is filled, so he votes in fay's finance seat, as fay.
    assert votes(step)[-1] == ("fay", "finance", "approve")
    assert (step.role, step.on_behalf_of, case.state) == ("finance", "fay", "board")
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
    with pytest.raises(NotPermitted, match="fay has already voted"):
        sim.fire(case, "bob", APPROVE)
    with pytest.raises(NotPermitted, match="fay has already voted"):
        sim.fire(case, "fay", REJECT)
    assert case.history[-1].detail == {"rule": "one-person-one-vote"}
    assert case.state == "joint"
    sim.fire(case, "mia", APPROVE)
    assert case.state == "board"


def test_a_delegate_for_the_submitter_may_not_vote() -> None:
    sim = Delegating({"bob": {"finance": "fay"}})
    case = in_joint(sim, by="fay")
    with pytest.raises(NotPermitted, match="bob acts for fay, who submitted this case"):
        sim.fire(case, "bob", APPROVE)
    with pytest.raises(NotPermitted, match="fay submitted this case"):
        sim.fire(case, "fay", APPROVE)
    assert case.history[-1].detail == {"rule": "separation-of-duties"}
    assert case.state == "joint"


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
