"""The language's second edition, who may act and what a step computes, on SQLite and PostgreSQL, through
the expense-reimbursement example (docs/examples/expense-reimbursement.yaml):

- separation of duties on any event (`not_by`): the claimant neither approves nor pays their own claim,
  the approver does not pay it;
- who may start a process and on what condition (`start:`): a claim for another department is refused;
- guards see the case (`case.started_by`, `case.seconds_in_state`, `case.fired_by`);
- a computed `set` (`compute:`): the amount tier, recorded in the step;
- user fields bound to roles (`format: user`, `role: finance`), checked when the data is given;
- approvals that carry data: the approver names the payer; a payload no approval declares is refused;
- events only the clock fires (`by: [$system]`): refused to people, never offered, fired by the timeout.

Each case ends with `audit verify`, which decides every step again from the trail alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sopflow.engine import GuardRefused, InvalidData, NotPermitted
from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, Worker
from tests.conftest import ROOT, Clock, engine_on

EXAMPLES = ROOT / "docs" / "examples"
CLAIM: dict[str, Any] = {"purpose": "出租车 taxi", "amount": 120, "department": "finance"}


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, EXAMPLES)


def submitted(engine: Engine, claimant: str = "qian.yu", **data: Any) -> int:
    case_id = engine.start("expense-reimbursement", {**CLAIM, **data}, actor=claimant).case.id
    engine.fire(case_id, "submit", actor=claimant)
    return case_id


def refusals(engine: Engine, case_id: int) -> list[str]:
    return [r.reason or "" for r in engine.history(case_id) if r.outcome == "refused"]


def test_the_claimant_may_not_pay_and_the_payer_named_by_the_approver_must_be_finance(engine: Engine) -> None:
    case_id = submitted(engine)
    with pytest.raises(InvalidData) as wrong_role:
        engine.fire(case_id, "approve", actor="li.lei", payload={"payer": "zhao.min"})
    assert wrong_role.value.message == (
        "payload field `payer` names zhao.min, who does not hold the role finance"
    )
    with pytest.raises(InvalidData) as nobody:
        engine.fire(case_id, "approve", actor="li.lei", payload={"payer": "qian.yo"})
    assert "who is not a person of the org" in nobody.value.message
    with pytest.raises(InvalidData):
        engine.fire(case_id, "approve", actor="li.lei")  # the payer is required
    assert engine.case(case_id).state == "manager_approval"  # nothing written by the refused votes
    # The approver names the claimant herself as payer: the payment is still refused to her.
    approved = engine.fire(case_id, "approve", actor="li.lei", payload={"payer": "qian.yu"})
    assert (approved.case.state, approved.case.data["payer"], approved.case.assignee) == (
        "paying",
        "qian.yu",
        "qian.yu",
    )
    assert approved.record.data_change == {"payer": [None, "qian.yu"]}
    with pytest.raises(NotPermitted) as own:
        engine.fire(case_id, "pay", actor="qian.yu")
    assert own.value.message == "qian.yu started the case and may not fire `pay` (separation of duties)"
    assert refusals(engine, case_id) == [f"not-permitted: {own.value.message}"]
    paid = engine.fire(case_id, "pay", actor="lin.fei")
    assert paid.case.state == "paid"
    assert engine.verify(case_id).ok


def test_the_claimant_may_not_approve_and_the_approver_may_not_pay(engine: Engine) -> None:
    case_id = submitted(engine, "li.lei", department="operations")
    with pytest.raises(NotPermitted) as own:
        engine.fire(case_id, "approve", actor="li.lei", payload={"payer": "qian.yu"})
    assert own.value.message == (
        "li.lei started the case and may not vote in `manager_approval` (separation of duties)"
    )
    engine.fire(case_id, "approve", actor="zhao.min", payload={"payer": "qian.yu"})
    options = {o.event: o for o in engine.options(case_id, "qian.yu")}
    assert options["pay"].allowed
    assert engine.fire(case_id, "pay", actor="qian.yu").case.state == "paid"
    assert engine.verify(case_id).ok


def test_whoever_fired_an_earlier_event_is_excluded(engine: Engine, tmp_path: Any) -> None:
    """`fired:approve`: a finance officer who approved (here as an operations manager too) may not pay."""
    folder = tmp_path / "defs"
    folder.mkdir()
    org = (EXAMPLES / "org.yaml").read_text(encoding="utf-8")
    org = org.replace(
        "roles: [finance], department: finance}\n  lin.fei",
        "roles: [finance, operations_manager], department: finance}\n  lin.fei",
        1,
    )
    (folder / "org.yaml").write_text(org, encoding="utf-8")
    (folder / "expense-reimbursement.yaml").write_text(
        (EXAMPLES / "expense-reimbursement.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    engine.deploy([folder])
    case_id = submitted(engine, "li.lei", department="operations")
    engine.fire(case_id, "approve", actor="qian.yu", payload={"payer": "lin.fei"})
    with pytest.raises(NotPermitted) as approver:
        engine.fire(case_id, "pay", actor="qian.yu")
    assert approver.value.message == (
        "qian.yu fired `approve` on the case and may not fire `pay` (separation of duties)"
    )
    assert not {o.event: o for o in engine.options(case_id, "qian.yu")}["pay"].allowed
    assert [t.case.id for t in engine.tasks("qian.yu")] == []  # she approved: not hers to pay
    assert engine.fire(case_id, "pay", actor="lin.fei").case.state == "paid"
    assert engine.verify(case_id).ok


def test_a_start_for_another_department_or_by_a_role_not_listed_is_refused(engine: Engine) -> None:
    with pytest.raises(GuardRefused) as other:
        engine.start("expense-reimbursement", {**CLAIM, "department": "technology"}, actor="qian.yu")
    assert other.value.message == (
        "a case of expense-reimbursement@1 may not be started: "
        "You can only claim an expense of your own department. (只能为本人所在部门的支出申请报销。)"
    )
    with pytest.raises(NotPermitted) as role:
        engine.start("expense-reimbursement", {**CLAIM, "department": "technology"}, actor="zheng.wei")
    assert role.value.message.startswith(
        "zheng.wei may not start a case of expense-reimbursement@1: it needs "
    )
    assert engine.cases() == []  # nothing written
    started = engine.start("expense-reimbursement", CLAIM, actor="qian.yu")
    assert started.record.role == "finance"


def test_the_tier_is_computed_and_recorded_and_routes_the_claim(engine: Engine) -> None:
    small = submitted(engine)
    large = submitted(engine, amount=6000)
    assert engine.case(small).state == "manager_approval"
    assert engine.case(large).state == "director_approval"
    record = engine.history(large)[1]
    assert record.detail["computed"] == {"tier": "large"}
    assert record.data_change == {"tier": [None, "large"]}
    engine.fire(large, "approve", actor="wang.fang", payload={"payer": "lin.fei"})
    assert engine.verify(large).ok and engine.verify(small).ok


def test_a_payload_on_a_vote_is_used_or_refused_never_ignored(engine: Engine) -> None:
    case_id = submitted(engine)
    with pytest.raises(InvalidData) as reject:
        engine.fire(case_id, "reject", actor="li.lei", payload={"payer": "lin.fei"})
    assert reject.value.message == "`reject` in `manager_approval` takes no payload: only `approve` does"
    launch = engine.start("feature-launch", {"feature": "f", "launch_date": "2026-10-01"}, actor="li.lei")
    engine.fire(launch.case.id, "submit", actor="li.lei")
    with pytest.raises(InvalidData) as none:
        engine.fire(launch.case.id, "approve", actor="zhao.min", payload={"note": "ok"})
    assert none.value.message == "`approve` in `precheck` takes no payload"
    assert engine.case(launch.case.id).state == "precheck"
    assert engine.fire(launch.case.id, "approve", actor="zhao.min").case.state == "joint_approval"


def test_a_guard_sees_who_started_the_case_and_its_time_in_state(engine: Engine, clock: Clock) -> None:
    case_id = engine.start("expense-reimbursement", {**CLAIM, "department": "operations"}, actor="chen.jing")
    with pytest.raises(GuardRefused) as early:
        engine.fire(case_id.case.id, "cancel", actor="li.lei")
    assert "has lain a week in drafting" in early.value.message
    clock.advance(days=7, seconds=1)
    assert engine.fire(case_id.case.id, "cancel", actor="li.lei").case.state == "cancelled"
    assert engine.verify(case_id.case.id).ok


def test_an_event_only_the_clock_fires_is_refused_to_people_and_offered_to_nobody(
    engine: Engine, clock: Clock
) -> None:
    case_id = submitted(engine)
    with pytest.raises(NotPermitted) as person:
        engine.fire(case_id, "expire", actor="li.lei")
    assert (
        person.value.message
        == "li.lei may not fire `expire` in state `manager_approval`: it needs the system"
    )
    assert "expire" not in {o.event for o in engine.options(case_id, "li.lei")}
    assert all("expire" not in t.events for t in engine.tasks("li.lei"))
    clock.advance(days=3)
    Worker(engine, channels=[ConsoleChannel(write=lambda _: None)]).tick()
    case = engine.case(case_id)
    assert case.state == "expired"
    assert engine.history(case_id)[-1].actor == "$system"
    assert engine.verify(case_id).ok


def test_a_person_in_the_start_data_is_checked_when_the_case_starts(engine: Engine) -> None:
    with pytest.raises(InvalidData) as wrong:
        engine.start("expense-reimbursement", {**CLAIM, "payer": "li.lei"}, actor="qian.yu")
    assert wrong.value.message == "data field `payer` names li.lei, who does not hold the role finance"
    assert wrong.value.hint == "give a member of finance: qian.yu, lin.fei"
    assert engine.cases() == []
    started = engine.start("expense-reimbursement", {**CLAIM, "payer": "lin.fei"}, actor="qian.yu")
    assert started.case.data["payer"] == "lin.fei"


def test_the_task_list_leaves_out_an_event_the_person_is_excluded_from(engine: Engine) -> None:
    case_id = submitted(engine)
    engine.fire(case_id, "approve", actor="li.lei", payload={"payer": "qian.yu"})
    assert [t.case.id for t in engine.tasks("qian.yu")] == []  # her own claim, though she is its payer
    (task,) = engine.tasks("lin.fei")
    assert (task.case.id, task.events) == (case_id, ("pay",))


VETOLESS = """
id: vetoless
version: 1
title: {zh: 测试, en: Vetoless}
initial: draft
states:
  draft:
    title: {zh: 草稿, en: Draft}
    owner: operations_manager
    on:
      submit: {to: vote, by: [$starter]}
  vote:
    title: {zh: 审批, en: Vote}
    owner: operations_manager
    approval:
      any_of: [operations_manager]
      not_by: [$starter]
      submitter_may_approve: true
      veto: false
      approved: done
      rejected: draft
  done:
    title: {zh: 完成, en: Done}
    final: true
"""


def test_an_approval_rejects_once_only_excluded_people_could_still_approve(
    engine: Engine, tmp_path: Any
) -> None:
    """Two managers, no veto: the claimant's colleague rejecting leaves only the claimant, whom `not_by`
    excludes, so the vote is lost at once instead of waiting for a vote nobody may cast."""
    (tmp_path / "vetoless.yaml").write_text(VETOLESS, encoding="utf-8")
    engine.deploy([tmp_path / "vetoless.yaml"])
    case_id = engine.start("vetoless", {}, actor="li.lei").case.id
    engine.fire(case_id, "submit", actor="li.lei")
    result = engine.fire(case_id, "reject", actor="zhao.min", comment="no receipt")
    assert result.case.state == "draft"
    assert result.record.detail["outcome"] == "rejected"
    assert engine.verify(case_id).ok


def test_simulate_does_not_offer_an_event_only_the_clock_fires() -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    result = CliRunner().invoke(
        cli,
        ["--as", "qian.yu", "simulate", str(EXAMPLES / "expense-reimbursement.yaml"), "--data",
         '{"purpose": "taxi", "amount": 120, "department": "finance"}', "submit"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "next: approve by operations_manager" in result.output
    assert "expire" not in result.output


def test_the_diagram_shows_who_may_not_act_and_what_only_the_clock_fires() -> None:
    from sopflow.cli.render import mermaid
    from sopflow.engine.definition.validate import validate_paths

    report = validate_paths([EXAMPLES])
    (definition,) = [d for d in report.definitions if d.id == "expense-reimbursement"]
    chart = mermaid(definition)
    assert 'manager_approval -->|"expire (clock only)"| expired' in chart
    assert 'paying -->|"pay not by $starter, fired:approve"| paid' in chart
    assert "approval: any of operations_manager, not by $starter" in chart
    assert "start((start)) -->|#quot;by operations_manager" not in chart  # the label is quoted once
    assert '[data.department == actor.department]"| drafting' in chart


def test_audit_verify_names_a_payment_rewritten_onto_the_claimant(engine: Engine) -> None:
    from tests.helpers.tamper import edit_record

    case_id = submitted(engine)
    engine.fire(case_id, "approve", actor="li.lei", payload={"payer": "qian.yu"})
    engine.fire(case_id, "pay", actor="lin.fei")
    assert engine.verify(case_id).ok
    edit_record(engine, case_id, 4, actor="qian.yu")  # the claimant, as if she had paid herself
    (found,) = engine.verify(case_id).findings
    assert found.seq == 4
    assert "it was not allowed: qian.yu started the case and may not fire `pay`" in found.problem


def test_audit_verify_names_a_computed_value_that_was_rewritten(engine: Engine) -> None:
    from tests.helpers.tamper import edit_record

    case_id = submitted(engine, amount=6000)
    record = engine.history(case_id)[1]
    edit_record(
        engine,
        case_id,
        2,
        detail={**record.detail, "computed": {"tier": "small"}},
        data_change={"tier": [None, "small"]},
    )
    (found,) = engine.verify(case_id).findings
    assert found.seq == 2
    assert "data change is not the one the rules give" in found.problem


def test_the_expense_scenarios_pass_on_sqlite_and_postgresql(database_url: str) -> None:
    """The owner's own scenarios of the example (docs/examples/expense-reimbursement.test.yaml), as
    `sopflow test --db URL` runs them, with every trail verified."""
    from sopflow.engine.scenario.load import load_scenario_file
    from sopflow.engine.scenario.run import run_files

    files, _definition, org = load_scenario_file(EXAMPLES / "expense-reimbursement.test.yaml")
    report = run_files([(files, org)], database=database_url, verify=True)
    assert [f"{r.name}: {r.difference.render()}" for r in report.results if r.difference] == []
    assert len(report.results) == 4


def test_a_delegate_acting_for_the_claimant_is_excluded_too(engine: Engine, clock: Clock) -> None:
    from datetime import timedelta

    case_id = submitted(engine, "li.lei", department="operations")
    engine.delegate("li.lei", "wu.hao", actor="li.lei", ends_at=clock() + timedelta(days=2))
    with pytest.raises(NotPermitted) as delegate:
        engine.fire(case_id, "approve", actor="wu.hao", payload={"payer": "lin.fei"})
    assert delegate.value.message == (
        "wu.hao acts for li.lei, who started the case and may not vote in `manager_approval` "
        "(separation of duties)"
    )
    assert engine.fire(case_id, "approve", actor="zhao.min", payload={"payer": "lin.fei"}).case.state == (
        "paying"
    )
    assert engine.verify(case_id).ok


def test_defs_show_says_who_may_start_and_which_events_are_the_clocks(tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from sopflow.cli.main import cli

    db = f"sqlite:///{tmp_path / 'x.db'}"
    runner = CliRunner()
    for args in (["db", "upgrade"], ["deploy", str(EXAMPLES)]):
        assert runner.invoke(cli, ["--db", db, *args]).exit_code == 0
    shown = runner.invoke(cli, ["--db", db, "defs", "show", "expense-reimbursement"])
    assert shown.exit_code == 0, shown.output
    assert "started by operations_manager, content_specialist" in shown.output
    assert "when data.department == actor.department" in shown.output
    assert "expire (the clock's) → expired" in shown.output
    as_json = runner.invoke(cli, ["--db", db, "--json", "defs", "show", "expense-reimbursement"])
    assert json.loads(as_json.output)["start"]["when"] == "data.department == actor.department"
