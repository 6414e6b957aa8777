"""Property tests of the engine's invariants, on every seed definition and on both databases:

- random sequences of events by random people: the durable runtime and the in-memory simulator agree on
  every outcome (accepted, or refused with the same kind), the stored state and data always equal the
  in-memory replay of the accepted events, and every audit chain verifies;
- for random votes on an approval, the case completes if and only if the rule is met, and only once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import APPROVE, REJECT, Approval
from sopflow.engine.definition.validate import load_definition_file, load_org_file
from sopflow.engine.errors import SopflowError
from sopflow.engine.runtime import Engine
from sopflow.engine.simulate import Simulation
from sopflow.engine.step import CLAIM, People, rule_met
from tests.helpers.walks import payloads, start_data

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"
ORG = load_org_file(DEFINITIONS / "org.yaml")
SEEDS = sorted(p.stem for p in DEFINITIONS.glob("*.yaml") if p.stem != "org" and not p.stem.endswith(".test"))


def _events(definition_id: str) -> list[str]:
    definition = load_definition_file(DEFINITIONS / f"{definition_id}.yaml", ORG)
    names: set[str] = {CLAIM}
    for state in definition.states.values():
        names.update(state.events)
    return sorted(names)


def _relevant_users(definition_id: str) -> list[str]:
    definition = load_definition_file(DEFINITIONS / f"{definition_id}.yaml", ORG)
    roles = definition.roles()
    users = [u.id for u in ORG.users.values() if roles & set(u.roles)]
    return [*users[:12], next(iter(ORG.users))]


@pytest.mark.parametrize("definition_id", SEEDS)
def test_runtime_equals_in_memory_replay(definition_id: str, database_url: str) -> None:
    engine = Engine(database_url)
    engine.deploy([DEFINITIONS])
    compiled = engine.compiled(definition_id)
    sim = Simulation(CompiledDefinition(compiled.definition), ORG)
    events = _events(definition_id)
    users = _relevant_users(definition_id)
    starts = start_data(definition_id)
    known_payloads = payloads(definition_id)
    examples = 25 if database_url.startswith("sqlite") else 10

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        start=st.sampled_from(starts),
        moves=st.lists(st.tuples(st.sampled_from(events), st.sampled_from(users)), max_size=25),
    )
    def run(start: tuple[str, dict[str, Any]], moves: list[tuple[str, str]]) -> None:
        starter, data = start
        mem = sim.start(starter, data)
        stored = engine.start(definition_id, data, actor=starter).case
        assert stored.state == mem.state
        for event, user in moves:
            payload = known_payloads.get(event, {})
            expected = _outcome(sim.fire, mem, user, event, payload)
            actual = _outcome(engine.fire, stored.id, event, actor=user, payload=payload)
            assert actual == expected, f"{event} by {user}"
            case = engine.case(stored.id)
            assert (case.state, dict(case.data)) == (mem.state, dict(mem.data))
            assert case.assignee == mem.snapshot.assignee
        report = engine.verify(stored.id)
        assert report.ok, report.findings
        stored_history = engine.history(stored.id)
        assert [(r.event, r.outcome, r.to_state) for r in stored_history] == [
            (r.event, r.outcome, r.to_state) for r in mem.history
        ]

    try:
        run()
    finally:
        engine.close()


def _outcome(call: Any, *args: Any, **kwargs: Any) -> str:
    try:
        call(*args, **kwargs)
    except SopflowError as exc:
        return exc.kind
    return "accepted"


# -- approvals: the rule, and nothing else, completes a case --------------------------------------------

COMMITTEE = ORG.members("decision_committee")
PEOPLE = People(ORG, lambda role: None)


@settings(max_examples=200, deadline=None)
@given(
    votes=st.lists(
        st.tuples(st.sampled_from(sorted(ORG.users)), st.sampled_from([APPROVE, REJECT])), max_size=12
    ),
    rule=st.sampled_from(["all_of", "any_of", "quorum"]),
    veto=st.booleans(),
)
def test_approval_completes_iff_the_rule_is_met(votes: list[tuple[str, str]], rule: str, veto: bool) -> None:
    from sopflow.engine.definition.model import Definition, State, Text

    roles: tuple[str, ...] = (
        ("operations_director", "technology_director")
        if rule == "all_of"
        else ("operations_lead",)
        if rule == "any_of"
        else ("decision_committee",)
    )
    approval = Approval(
        rule=rule,
        roles=roles,
        approved="yes",
        rejected="no",
        path=("states", "vote"),  # type: ignore[arg-type]
        at_least=3,
        veto=veto,
    )
    states = {
        "vote": State(name="vote", title=Text("投票", "Vote"), path=("states", "vote"), approval=approval),
        "yes": State(name="yes", title=Text("通过", "Yes"), path=("states", "yes"), final=True),
        "no": State(name="no", title=Text("否决", "No"), path=("states", "no"), final=True),
    }
    definition = Definition(
        id="vote",
        version=1,
        title=Text("投票", "Vote"),
        initial="vote",
        states=states,
        content_hash="0" * 64,
        file="vote.yaml",
    )
    sim = Simulation(CompiledDefinition(definition), ORG)
    case = sim.start("han.bing", {})
    approvers: set[str] = set()
    rejecters: set[str] = set()
    moves = 0
    for user, event in votes:
        before = case.state
        try:
            sim.fire(case, user, event)
        except SopflowError:
            assert case.state == before
            continue
        (approvers if event == APPROVE else rejecters).add(user)
        if case.state != before:
            moves += 1
            if case.state == "yes":
                assert rule_met(approval, approvers, PEOPLE)
                assert not (veto and rejecters)
            else:
                assert rejecters
        elif event == APPROVE:
            assert not rule_met(approval, approvers, PEOPLE)
    assert moves <= 1
    if case.state == "vote":
        assert not rule_met(approval, approvers, PEOPLE) and not (veto and rejecters)
