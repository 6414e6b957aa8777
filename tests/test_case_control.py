"""Case control on SQLite and PostgreSQL: staying in a state without entering it again.

A transition back to its own state records its step and stays: the assignee (or a claim), the state's
timeout, a deadline that restarts on re-entry and an approval round all go on; `reenter: true` leaves and
enters the state again. `audit verify` re-decides both. The fixture: tests/fixtures/control.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopflow.engine import Engine
from sopflow.engine.errors import InvalidData, NotAvailable, NotPermitted
from sopflow.engine.worker import Worker
from tests.conftest import ROOT, Clock, engine_on

CONTROL = ROOT / "tests" / "fixtures" / "control"
EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, CONTROL)


def _timers(sop: Engine, case_id: int) -> set[tuple[str, str, datetime]]:
    return {(t.kind, t.name, t.due_at) for t in sop.store.pending_timers(case_id)}


def _claimed(sop: Engine) -> int:
    case = sop.start("ticket", {"title": "printer"}, actor="alice").case
    sop.fire(case.id, "claim", actor="bob")
    return case.id


def test_a_note_keeps_the_claim_and_the_timers(sop: Engine, clock: Clock) -> None:
    case_id = _claimed(sop)
    before = (sop.case(case_id), _timers(sop, case_id))
    clock.advance(hours=1)
    sop.fire(case_id, "note", actor="alice", payload={"note": "toner ordered"})
    after = sop.case(case_id)
    assert after.assignee == "bob"  # the claim holds: the claimant can still act
    assert (after.entered_at, after.submitter) == (before[0].entered_at, before[0].submitter)
    assert _timers(sop, case_id) == before[1]  # the timeout and the on_reentry deadline kept their clocks
    record = sop.history(case_id)[-1]
    assert (record.event, record.to_state, record.detail["stayed"]) == ("note", "queue", True)
    sop.fire(case_id, "handle", actor="bob")  # not refused: the note did not drop the claim
    assert sop.verify().ok, sop.verify().findings


def test_the_timeout_fires_at_its_first_time_after_notes(sop: Engine, clock: Clock) -> None:
    case_id = _claimed(sop)
    for _ in range(3):
        clock.advance(hours=1)
        sop.fire(case_id, "note", actor="bob", payload={"note": "still waiting"})
    clock.advance(hours=1)  # four hours since the case entered the queue
    Worker(sop, name="w1").tick()
    chase = sop.history(case_id)[-1]
    assert (chase.actor, chase.event) == ("$system", "chase")
    # `chase` re-enters (reenter: true): the claim is dropped and the clocks start again.
    case = sop.case(case_id)
    assert case.assignee is None
    restarted = {clock.now + timedelta(hours=4), clock.now + timedelta(days=1)}
    assert {t[2] for t in _timers(sop, case_id)} == restarted
    assert sop.verify().ok, sop.verify().findings


def test_a_note_keeps_the_least_loaded_assignee_and_pass_on_picks_again(sop: Engine) -> None:
    case_id = _claimed(sop)
    other = sop.start("ticket", {"title": "desk"}, actor="alice").case.id
    sop.fire(other, "claim", actor="alice")
    sop.fire(other, "handle", actor="alice")
    holder = sop.case(other).assignee
    sop.fire(case_id, "handle", actor="bob")
    mine = sop.case(case_id).assignee
    assert mine is not None and mine != holder  # the less loaded manager
    sop.fire(other, "submit", actor=str(holder))  # now the first manager holds no case of `handling`
    sop.fire(case_id, "note", actor="alice", payload={"note": "called back"})
    assert sop.case(case_id).assignee == mine  # staying picks nobody again
    sop.fire(case_id, "pass_on", actor=mine)
    assert sop.case(case_id).assignee == holder  # re-entering does
    assert sop.verify().ok, sop.verify().findings


def test_a_note_keeps_the_votes_and_restart_round_clears_them(sop: Engine) -> None:
    case_id = _claimed(sop)
    sop.fire(case_id, "handle", actor="bob")
    manager = sop.case(case_id).assignee
    assert manager is not None
    sop.fire(case_id, "submit", actor=manager)
    other = "max" if manager == "mia" else "mia"
    sop.fire(case_id, "approve", actor=other)
    sop.fire(case_id, "note", actor="alice", payload={"note": "invoice attached"})
    with pytest.raises(NotPermitted, match="already voted"):
        sop.fire(case_id, "approve", actor=other)  # the round goes on: the vote still counts
    progress = sop.approval_progress(case_id)
    assert progress is not None and f"{other} (manager) approved" in progress
    sop.fire(case_id, "restart_round", actor="alice")
    progress = sop.approval_progress(case_id)
    assert progress is not None and "no votes yet" in progress
    sop.fire(case_id, "approve", actor=other)
    sop.fire(case_id, "approve", actor="fay")
    assert sop.case(case_id).state == "done"
    assert sop.verify().ok, sop.verify().findings


@pytest.fixture
def examples(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, EXAMPLES)


def test_the_documented_support_ticket_keeps_its_manager(examples: Engine) -> None:
    sop = examples
    case = sop.start("support-ticket", {"customer_id": "c1", "question": "refund?"}, actor="xu.ning")
    case_id = case.case.id
    sop.fire(case_id, "claim", actor="xu.ning")
    sop.fire(case_id, "escalate", actor="xu.ning", payload={"reason": "refund over limit"})
    manager = sop.case(case_id).assignee
    assert manager is not None
    sop.fire(case_id, "note", actor=manager, payload={"note": "finance asked"})
    assert sop.case(case_id).assignee == manager
    assert sop.case(case_id).data["progress_note"] == "finance asked"
    assert sop.verify().ok


def test_a_self_transition_recorded_before_staying_still_verifies(
    sop: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written when every transition back to its own state re-entered it (no `stayed` in their
    detail, the claim dropped) are replayed as re-entries, so such old cases still verify."""
    from sopflow.engine import runtime
    from sopflow.engine.step import take_step

    monkeypatch.setattr(runtime, "take_step", functools.partial(take_step, stay=False))
    case_id = _claimed(sop)
    sop.fire(case_id, "note", actor="alice", payload={"note": "old style"})
    assert sop.case(case_id).assignee is None  # the old way: the claim was dropped
    assert "stayed" not in sop.history(case_id)[-1].detail
    monkeypatch.undo()
    sop.fire(case_id, "claim", actor="bob")
    sop.fire(case_id, "note", actor="alice", payload={"note": "new style"})
    assert sop.case(case_id).assignee == "bob"
    assert sop.verify().ok, sop.verify().findings


def _in_state(sop: Engine, state: str) -> int:
    """A ticket in `state` with its work held: claimed in the queue, a manager in handling, one vote cast
    in review."""
    case_id = _claimed(sop)
    if state == "queue":
        return case_id
    sop.fire(case_id, "handle", actor="bob")
    if state == "handling":
        return case_id
    manager = sop.case(case_id).assignee
    assert manager is not None
    sop.fire(case_id, "submit", actor=manager)
    sop.fire(case_id, "approve", actor="fay")
    return case_id


def test_property_a_stay_changes_no_assignee_claim_timer_or_round(
    sop: Engine, database_url: str, clock: Clock
) -> None:
    """For any run of notes, by anyone who may write one, at any times before the state's timeout: the
    assignee, the submitter, when the state was entered, every pending timer and the votes are as before."""
    examples = 15 if database_url.startswith("sqlite") else 6

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        state=st.sampled_from(["queue", "handling", "review"]),
        notes=st.lists(
            st.tuples(st.integers(0, 20), st.sampled_from(["alice", "bob", "mia", "max", "fay", "dual"])),
            min_size=1,
            max_size=5,
        ),
    )
    def run(state: str, notes: list[tuple[int, str]]) -> None:
        case_id = _in_state(sop, state)
        case = sop.case(case_id)
        before = (case.assignee, case.submitter, case.entered_at, _timers(sop, case_id))
        progress = sop.approval_progress(case_id)
        for minutes, person in notes:
            clock.advance(minutes=minutes)
            try:
                sop.fire(case_id, "note", actor=person, payload={"note": f"{person} at {minutes}"})
            except NotPermitted:
                continue
        case = sop.case(case_id)
        assert case.state == state
        assert (case.assignee, case.submitter, case.entered_at, _timers(sop, case_id)) == before
        assert sop.approval_progress(case_id) == progress
        assert sop.verify(case_id).ok

    run()


# -- cancel --------------------------------------------------------------------------------------------

NESTED = ROOT / "tests" / "fixtures" / "nested"


@pytest.fixture
def nested(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, NESTED)


def test_an_administrator_cancels_a_case_where_it_stands(sop: Engine) -> None:
    case_id = _claimed(sop)
    assert _timers(sop, case_id)
    done = sop.cancel(case_id, actor="root", reason="the customer withdrew")
    assert (done.case.state, done.case.open, done.case.assignee) == ("queue", False, "bob")
    assert (done.record.event, done.record.role, done.record.comment) == (
        "cancel_case",
        "admin",
        "the customer withdrew",
    )
    assert _timers(sop, case_id) == set()
    with pytest.raises(NotAvailable, match=r"was cancelled in `queue`.*the customer withdrew"):
        sop.fire(case_id, "handle", actor="bob")
    with pytest.raises(NotAvailable, match="nothing to cancel"):
        sop.cancel(case_id, actor="root", reason="again")
    assert sop.verify().ok, sop.verify().findings


def test_a_declared_role_may_cancel_and_others_are_refused_on_the_record(sop: Engine, clock: Clock) -> None:
    case_id = _claimed(sop)
    with pytest.raises(NotPermitted, match="may not cancel"):
        sop.cancel(case_id, actor="bob", reason="not mine")
    refusal = sop.history(case_id)[-1]
    assert (refusal.event, refusal.outcome, refusal.actor) == ("cancel_case", "refused", "bob")
    assert sop.case(case_id).open
    with pytest.raises(InvalidData, match="reason"):
        sop.cancel(case_id, actor="mia", reason="  ")
    assert len(sop.history(case_id)) == 3  # nothing written for a cancel without a reason
    # A manager's role held by delegation cancels on the manager's behalf.
    sop.delegate("mia", "alice", actor="mia", ends_at=clock.now + timedelta(days=1))
    done = sop.cancel(case_id, actor="alice", reason="duplicate of another ticket")
    assert (done.record.role, done.record.on_behalf_of) == ("manager", "mia")
    assert sop.verify().ok, sop.verify().findings


def test_cancel_closes_the_open_children_and_their_timers(nested: Engine) -> None:
    sop = nested
    case = sop.start("purchase", {"item": "laptop", "amount": 500}, actor="alice").case
    sop.fire(case.id, "request", actor="alice")
    child = sop.links(case.id)[1][0].case_id
    sop.fire(child, "quote", actor="fay", payload={"price": 420})
    grandchild = sop.links(child)[1][0].case_id
    with pytest.raises(NotAvailable, match="waits on it"):
        sop.cancel(child, actor="root", reason="too dear")
    sop.cancel(case.id, actor="root", reason="budget frozen")
    for each in (case.id, child, grandchild):
        assert not sop.case(each).open
        assert sop.store.pending_timers(each) == []
    assert sop.history(grandchild)[-1].event == "closed_by_parent"
    assert sop.verify().ok, sop.verify().findings


def test_a_cancel_the_rules_did_not_allow_is_found_by_verify(
    sop: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel written for someone the rules refuse (an employee) is named by `audit verify`, which
    decides it again with the real rule."""
    from sopflow.engine import control
    from sopflow.engine.definition.model import Definition, Org
    from sopflow.engine.step import Actor

    def anyone(definition: Definition, org: Org, person: Actor, act: str) -> tuple[str, str | None]:
        return "employee", None

    case_id = _claimed(sop)
    monkeypatch.setattr(control, "decide_control", anyone)
    sop.cancel(case_id, actor="bob", reason="mine to drop")
    monkeypatch.undo()
    report = sop.verify(case_id)
    assert not report.ok
    assert "may not cancel" in report.findings[0].problem


def test_property_a_cancelled_case_has_no_live_timer_or_open_child(nested: Engine, clock: Clock) -> None:
    """Whatever steps a purchase took, and whenever: after its cancel no case of its family is open
    and none has a pending timer; `audit verify` agrees."""
    sop = nested
    moves = ["request", "child:quote", "child:decline", "grandchild:sign", "cancel"]

    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(steps=st.lists(st.tuples(st.sampled_from(moves), st.integers(0, 600)), max_size=6))
    def run(steps: list[tuple[str, int]]) -> None:
        case_id = sop.start("purchase", {"item": "desk", "amount": 300}, actor="alice").case.id
        actors = {"request": "alice", "quote": "fay", "decline": "fay", "sign": "mia", "cancel": "bob"}
        for move, minutes in steps:
            clock.advance(minutes=minutes)
            target = case_id
            for _ in range(move.count(":")):
                children = [c for c in sop.links(target)[1] if c.open]
                if not children:
                    break
                target = children[0].case_id
            event = move.rsplit(":", 1)[-1]
            payload = {"price": 250} if event == "quote" else None
            try:
                sop.fire(target, event, actor=actors[event], payload=payload)
            except (NotPermitted, NotAvailable, InvalidData):
                continue
        if sop.case(case_id).open:
            sop.cancel(case_id, actor="root", reason="property")
        family = [case_id]
        for each in family:
            family.extend(c.case_id for c in sop.links(each)[1])
            assert not sop.case(each).open
            assert sop.store.pending_timers(each) == []
        assert sop.verify(case_id).ok

    run()


def test_the_cancel_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.test_cli import Sop, refused

    sop = Sop(f"sqlite:///{tmp_path / 'x.db'}", CliRunner())
    sop.ok("deploy", str(CONTROL))
    case = sop.start("ticket", "alice", {"title": "chair"})
    refused(sop("cancel", str(case), "--reason", "no", user="bob"), 1, "may not cancel", "manager")
    missing = sop("cancel", str(case), user="root")
    assert missing.exit_code == 2 and "--reason" in missing.stderr
    done = sop.ok("cancel", str(case), "--reason", "withdrawn", user="root")
    assert f"case {case} (ticket@1) is cancelled in queue" in done.stdout
    assert sop.json("history", str(case))[-1]["event"] == "cancel_case"
    refused(sop("cancel", str(case), "--reason", "again", user="root"), 1, "closed")
    refused(sop.fire(case, "claim", "bob"), 1, f"case {case} was cancelled in `queue`", "withdrawn")
    rota = sop.start("rota", "alice", {})
    sop.ok("fire", str(rota), "dispatch", user="alice")
    holder = sop.json("show", str(rota))["case"]["assignee"]
    sop.ok("fire", str(rota), "done", user=holder)
    ended = sop.fire(rota, "back", holder)
    refused(ended, 1, f"case {rota} is closed: it ended in `closed`")
    assert "parent" not in ended.stderr


def test_a_case_that_ended_says_so_and_names_no_parent(sop: Engine) -> None:
    case_id = sop.start("rota", {}, actor="alice").case.id
    sop.fire(case_id, "dispatch", actor="alice")
    sop.fire(case_id, "done", actor=sop.case(case_id).assignee or "")
    records = len(sop.history(case_id))
    for attempt in (
        lambda: sop.fire(case_id, "back", actor="mia"),
        lambda: sop.reassign(case_id, "max", actor="root"),
    ):
        with pytest.raises(NotAvailable) as closed:
            attempt()
        assert str(closed.value.message) == f"case {case_id} is closed: it ended in `closed` (Closed (完成))"
        assert "parent" not in closed.value.message + (closed.value.hint or "")
    assert len(sop.history(case_id)) == records  # nothing written


def test_a_closed_child_names_its_parent_and_a_cancelled_case_its_cancel(nested: Engine) -> None:
    parent = nested.start("purchase", {"item": "laptop", "amount": 500}, actor="alice").case.id
    nested.fire(parent, "request", actor="alice")
    child = nested.links(parent)[1][0].case_id
    nested.cancel(parent, actor="root", reason="budget frozen")
    for attempt in (
        lambda: nested.fire(child, "quote", actor="fay", payload={"price": 420}),
        lambda: nested.reassign(child, "fay", actor="root"),
    ):
        with pytest.raises(NotAvailable, match=rf"case {child} is closed: its parent case {parent} closed"):
            attempt()
    with pytest.raises(NotAvailable, match=rf"case {parent} was cancelled in `quoting`.*budget frozen"):
        nested.fire(parent, "request", actor="alice")


def test_the_checker_names_unknown_cancel_roles_and_a_clashing_event(tmp_path: Path) -> None:
    from sopflow.engine.definition.validate import validate_paths

    text = (CONTROL / "ticket.yaml").read_text(encoding="utf-8")
    text = text.replace("cancel: [manager]", "cancel: [managr]")
    text = text.replace("      pass_on:", "      cancel_case:")
    (tmp_path / "ticket.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "org.yaml").write_text((CONTROL / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    found = {(p.code, p.line, p.message) for p in validate_paths([tmp_path]).problems}
    assert ("unknown-role", 14, "the org has no role `managr`") in found
    assert any(code == "duplicate-event" and "cancel_case" in message for code, _line, message in found)


# -- suspend and resume ------------------------------------------------------------------------------------


def _events(sop: Engine, case_id: int) -> list[str]:
    return [r.event for r in sop.history(case_id) if r.outcome == "accepted"]


def test_a_suspended_case_refuses_steps_and_its_timers_pause(sop: Engine, clock: Clock) -> None:
    case_id = _claimed(sop)  # the timeout `chase` is due in 4h, the deadline in 1d
    clock.advance(hours=1)
    done = sop.suspend(case_id, actor="bob", reason="waiting for the customer")
    assert (done.case.open, done.record.event, done.record.role) == (False, "suspend_case", "employee")
    assert [(e["kind"], e["left"]) for e in done.record.detail["paused"]] == [
        ("deadline", 23 * 3600.0),
        ("timeout", 3 * 3600.0),
    ]
    assert _timers(sop, case_id) == set()
    with pytest.raises(NotAvailable, match=r"suspended .*waiting for the customer") as refused:
        sop.fire(case_id, "handle", actor="bob")
    assert "sopflow resume" in (refused.value.hint or "")
    clock.advance(days=3)
    assert Worker(sop, name="w1").tick().total == 0  # nothing fires while suspended
    resumed = sop.resume(case_id, actor="mia", reason="the customer answered")
    assert resumed.record.detail["suspended_seconds"] == 3 * 86400
    assert resumed.case.open and resumed.case.assignee == "bob"
    assert _timers(sop, case_id) == {
        ("timeout", "timeout:queue", clock.now + timedelta(hours=3)),
        ("deadline", "answer-in-1d", clock.now + timedelta(hours=23)),
    }
    clock.advance(hours=3)
    Worker(sop, name="w1").tick()
    assert _events(sop, case_id)[-1] == "chase"
    assert sop.verify().ok, sop.verify().findings


def test_working_time_left_stays_working_time(sop: Engine, clock: Clock) -> None:
    case_id = _claimed(sop)  # Monday 09:00 UTC, the org's calendar: weekdays 09:00-18:00 UTC
    clock.advance(hours=1)
    sop.fire(case_id, "handle", actor="bob")  # handled-in-4wh: due 14:00
    clock.advance(hours=1)
    sop.suspend(case_id, actor="mia", reason="parts on order")  # 3 working hours left
    clock.advance(hours=6)  # 17:00: one working hour left today
    sop.resume(case_id, actor="mia")
    due = {t[1]: t[2] for t in _timers(sop, case_id)}
    assert due["handled-in-4wh"] == clock.now + timedelta(hours=18)  # Tuesday 11:00
    assert due["timeout:handling"] == clock.now + timedelta(hours=1)  # a timeout counts wall time
    assert sop.verify().ok, sop.verify().findings


def test_who_may_suspend_and_what_cannot_be_suspended(sop: Engine) -> None:
    case_id = _claimed(sop)
    with pytest.raises(NotPermitted, match="may not suspend or resume"):
        sop.suspend(case_id, actor="fay", reason="finance says wait")
    assert sop.history(case_id)[-1].outcome == "refused"
    with pytest.raises(NotAvailable, match="not suspended"):
        sop.resume(case_id, actor="mia")
    with pytest.raises(InvalidData, match="reason"):
        sop.suspend(case_id, actor="mia", reason="")
    sop.suspend(case_id, actor="mia", reason="on hold")
    with pytest.raises(NotAvailable, match="suspended"):
        sop.suspend(case_id, actor="mia", reason="twice")
    with pytest.raises(NotPermitted):
        sop.resume(case_id, actor="fay")
    # A suspended case may be cancelled: it closes, its paused timers never run again.
    sop.cancel(case_id, actor="mia", reason="dropped while on hold")
    with pytest.raises(NotAvailable, match="cancelled"):
        sop.fire(case_id, "note", actor="bob", payload={"note": "late"})
    with pytest.raises(NotAvailable, match="not suspended"):
        sop.resume(case_id, actor="mia")
    assert _timers(sop, case_id) == set()
    assert sop.verify().ok, sop.verify().findings


def test_a_case_linked_to_a_running_subprocess_is_not_suspended(nested: Engine) -> None:
    case = nested.start("purchase", {"item": "laptop", "amount": 500}, actor="alice").case
    nested.fire(case.id, "request", actor="alice")
    child = nested.links(case.id)[1][0].case_id
    for which in (case.id, child):
        with pytest.raises(NotAvailable, match="sub-process"):
            nested.suspend(which, actor="root", reason="hold")


def test_the_suspend_and_resume_commands(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.test_cli import Sop, refused

    sop = Sop(f"sqlite:///{tmp_path / 'x.db'}", CliRunner())
    sop.ok("deploy", str(CONTROL))
    case = sop.start("ticket", "alice", {"title": "lamp"})
    done = sop.ok("suspend", str(case), "--reason", "waiting for the customer", user="alice")
    assert f"case {case} (ticket@1) is suspended in queue" in done.stdout
    refused(sop.fire(case, "claim", "bob"), 1, "suspended", "sopflow resume")
    refused(sop("resume", str(case), user="fay"), 1, "may not suspend or resume")
    assert sop.json("resume", str(case), user="root")["record"]["event"] == "resume_case"
    sop.ok("fire", str(case), "claim", user="bob")


def test_a_suspended_case_is_listed_as_open_work(sop: Engine) -> None:
    waiting = sop.start("ticket", {"title": "lamp"}, actor="alice").case.id
    other = sop.start("ticket", {"title": "desk"}, actor="alice").case.id
    dropped = sop.start("ticket", {"title": "chair"}, actor="alice").case.id
    sop.suspend(waiting, actor="alice", reason="waiting for the customer")
    sop.cancel(dropped, actor="root", reason="a duplicate")
    with pytest.raises(NotPermitted):
        sop.cancel(waiting, actor="bob", reason="tidying up")  # refused and recorded: still suspended
    listed = sop.cases(open=True, or_suspended=True)
    assert [(c.id, c.suspended) for c in listed] == [(waiting, True), (other, False)]
    assert [c.id for c in sop.cases(suspended=True)] == [waiting]
    assert [c.id for c in sop.cases(open=True)] == [other]
    assert [(c.id, c.suspended) for c in sop.cases()] == [(waiting, True), (other, False), (dropped, False)]
    assert [c.id for c in sop.cases(suspended=False)] == [other, dropped]
    sop.resume(waiting, actor="alice", reason="the customer answered")
    assert sop.cases(suspended=True) == []
    assert [(c.id, c.suspended) for c in sop.cases(open=True)] == [(waiting, False), (other, False)]


def test_list_shows_suspended_cases_marked(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.test_cli import Sop

    sop = Sop(f"sqlite:///{tmp_path / 'x.db'}", CliRunner())
    sop.ok("deploy", str(CONTROL))
    waiting = sop.start("ticket", "alice", {"title": "lamp"})
    other = sop.start("ticket", "alice", {"title": "desk"})
    sop.ok("suspend", str(waiting), "--reason", "waiting for the customer", user="alice")
    rows = [(r["id"], r["state"], r["suspended"]) for r in sop.json("list")]
    assert rows == [(waiting, "queue", True), (other, "queue", False)]
    assert [r["id"] for r in sop.json("list", "--suspended")] == [waiting]
    lines = sop.ok("list").stdout.splitlines()
    marked = next(line for line in lines if line.startswith(f"{waiting} "))
    assert marked.split()[2:4] == ["queue", "(suspended)"]
    assert next(line for line in lines if line.startswith(f"{other} ")).split()[2] == "queue"
    assert sop.json("list", "--suspended", "--state", "elsewhere") == []


def test_property_deadlines_fire_after_exactly_the_time_left(sop: Engine, clock: Clock) -> None:
    """For any suspensions (when, and for how long) before the timeout of the queue is due, `chase` fires
    exactly when the 4 hours have run outside the suspensions: not a second before."""

    @settings(
        max_examples=10,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(pauses=st.lists(st.tuples(st.integers(1, 50), st.integers(0, 3000)), min_size=1, max_size=3))
    def run(pauses: list[tuple[int, int]]) -> None:
        case_id = _claimed(sop)
        ran = timedelta()
        for before, length in pauses:
            clock.advance(minutes=before)
            ran += timedelta(minutes=before)
            sop.suspend(case_id, actor="mia", reason="hold")
            clock.advance(minutes=length)
            sop.resume(case_id, actor="mia")
        due = clock.now + timedelta(hours=4) - ran
        worker = Worker(sop, name="w1")
        worker.tick(due - timedelta(seconds=1))
        assert _events(sop, case_id)[-1] == "resume_case"
        worker.tick(due)
        assert _events(sop, case_id)[-1] == "chase"
        assert sop.verify(case_id).ok, sop.verify(case_id).findings

    run()


def test_scenarios_suspend_resume_and_cancel_on_a_fake_clock(database_url: str) -> None:
    """`sopflow test` steps `suspend`, `resume` and `cancel`, and a clock step while suspended that fires
    nothing (tests/fixtures/control/ticket.test.yaml), on SQLite and PostgreSQL."""
    from sopflow.engine.scenario.load import load_scenario_file
    from sopflow.engine.scenario.run import run_files

    files, _definition, org = load_scenario_file(CONTROL / "ticket.test.yaml")
    report = run_files([(files, org)], database=database_url, verify=True)
    assert [f"{r.name}: {r.difference.render()}" for r in report.results if r.difference] == []
    assert len(report.results) == 2


def test_a_scenario_expecting_the_timeout_while_suspended_fails(tmp_path: Path) -> None:
    from sopflow.engine.scenario.load import load_scenario_file
    from sopflow.engine.scenario.run import run_files

    for name in ("ticket.yaml", "org.yaml"):
        (tmp_path / name).write_text((CONTROL / name).read_text(encoding="utf-8"), encoding="utf-8")
    text = (CONTROL / "ticket.test.yaml").read_text(encoding="utf-8")
    (tmp_path / "ticket.test.yaml").write_text(text.replace("after: 2h59m", "after: 3h"), encoding="utf-8")
    files, _definition, org = load_scenario_file(tmp_path / "ticket.test.yaml")
    report = run_files([(files, org)], database=None, verify=True)
    failed = [r for r in report.results if r.difference]
    assert len(failed) == 1 and "timers_fired" in failed[0].difference.render()


def test_simulate_suspends_resumes_and_cancels() -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    args = ["--as", "alice", "--json", "simulate", str(CONTROL / "ticket.yaml"), "--data", '{"title": "x"}']
    steps = ["claim@bob", "case:suspend@bob=waiting", "handle@bob", "+5h", "case:resume@mia", "+4h"]
    result = CliRunner().invoke(cli, [*args, *steps, "case:cancel@mia=done"], catch_exceptions=False)
    assert result.exit_code == 1  # the step refused while suspended
    out = json.loads(result.stdout)["steps"]
    assert out[3]["refused"]["error"] == "not-available"
    assert out[4]["timers_fired"] == []  # the clock stood still for the suspended case
    assert out[6]["timers_fired"] == ["timeout:queue"]  # 4h of the timeout, none of the 5h suspended
    assert out[7] == {"step": "case:cancel", "as": "mia", "state": "queue"}
    bad = CliRunner().invoke(cli, [*args, "case:pause@bob"], catch_exceptions=False)
    assert bad.exit_code == 2 and "case:suspend" in bad.stderr


# -- absence: standing in for the assignee, handing on one's own task ---------------------------------------


def test_a_delegation_covers_the_cases_assigned_to_the_absent_person(sop: Engine, clock: Clock) -> None:
    case_id = _claimed(sop)  # bob holds it
    with pytest.raises(NotPermitted):
        sop.fire(case_id, "handle", actor="alice")
    # alice holds employee herself: the delegation still makes her bob's stand-in on his cases.
    sop.delegate("bob", "alice", actor="bob", ends_at=clock.now + timedelta(days=2), reason="holiday")
    (task,) = [t for t in sop.tasks("alice") if t.case.id == case_id]
    assert "handle" in task.events and "assigned to bob, for whom you stand in" in task.reason
    done = sop.fire(case_id, "handle", actor="alice")
    assert (done.record.role, done.record.on_behalf_of) == ("$assignee", "bob")
    clock.advance(days=3)  # the delegation has ended
    other = _claimed(sop)
    with pytest.raises(NotPermitted):
        sop.fire(other, "handle", actor="alice")
    assert sop.verify().ok, sop.verify().findings


def test_the_assignee_hands_their_own_task_to_another_member_of_its_role(sop: Engine) -> None:
    case_id = _claimed(sop)
    with pytest.raises(NotPermitted, match="may not reassign"):
        sop.reassign(case_id, "bob", actor="alice")  # not the assignee, not a manager
    with pytest.raises(NotPermitted, match="does not hold employee"):
        sop.reassign(case_id, "fay", actor="bob")
    done = sop.reassign(case_id, "alice", actor="bob", comment="I am off tomorrow")
    assert (done.case.assignee, done.record.role) == ("alice", "employee")
    sop.fire(case_id, "handle", actor="alice")
    assert sop.verify().ok, sop.verify().findings


def test_tasks_leave_out_an_event_whose_guard_does_not_hold_now(sop: Engine) -> None:
    case_id = _claimed(sop)
    sop.fire(case_id, "handle", actor="bob")
    manager = sop.case(case_id).assignee
    assert manager is not None

    def offered() -> tuple[str, ...]:
        return next(t.events for t in sop.tasks(manager) if t.case.id == case_id)

    assert "close_fixed" not in offered()  # its guard, has(data.note), does not hold
    assert "submit" in offered()
    sop.fire(case_id, "note", actor=manager, payload={"note": "replaced the fuse"})
    assert "close_fixed" in offered()
    sop.fire(case_id, "close_fixed", actor=manager)


# -- the work item: offered, allocated, started ---------------------------------------------------------


def test_a_work_item_is_offered_allocated_and_started(sop: Engine, clock: Clock) -> None:
    case_id = sop.start("ticket", {"title": "screen"}, actor="alice").case.id
    item = sop.work_item(case_id)
    assert (item.status, item.offered_to, item.assignee) == ("offered", "employee", None)
    with pytest.raises(NotPermitted, match="claim it first"):
        sop.fire(case_id, "start_work", actor="bob")
    clock.advance(minutes=5)
    sop.fire(case_id, "claim", actor="bob")
    item = sop.work_item(case_id)
    assert (item.status, item.assignee, item.allocated_at) == ("allocated", "bob", clock.now)
    options = {o.event: o.allowed for o in sop.options(case_id, "bob")}
    assert options["start_work"] is True
    with pytest.raises(NotPermitted, match="it is bob's"):
        sop.fire(case_id, "start_work", actor="alice")
    clock.advance(minutes=10)
    done = sop.fire(case_id, "start_work", actor="bob")
    assert done.record.detail == {"started_by": "bob"}
    item = sop.work_item(case_id)
    assert (item.status, item.started_by, item.started_at) == ("started", "bob", clock.now)
    before = _timers(sop, case_id)
    assert sop.case(case_id).entered_at == clock.now - timedelta(minutes=15)  # starting work stays
    assert _timers(sop, case_id) == before
    # A reassignment allocates it afresh: the new assignee has not started.
    sop.reassign(case_id, "alice", actor="bob")
    assert sop.work_item(case_id).status == "allocated"
    sop.suspend(case_id, actor="mia", reason="hold")
    assert sop.work_item(case_id).status == "suspended"
    assert sop.verify().ok, sop.verify().findings


def test_the_start_work_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.test_cli import Sop, refused

    sop = Sop(f"sqlite:///{tmp_path / 'x.db'}", CliRunner())
    sop.ok("deploy", str(CONTROL))
    case = sop.start("ticket", "alice", {"title": "lamp"})
    sop.ok("fire", str(case), "claim", user="bob")
    refused(sop("start-work", str(case), user="alice"), 1, "it is bob's")
    answer = sop.json("start-work", str(case), user="bob")
    assert answer["work_item"]["status"] == "started" and answer["work_item"]["started_by"] == "bob"


# -- distribution by history --------------------------------------------------------------------------------


def test_fired_by_gives_the_step_to_the_specialist_of_the_earlier_step(sop: Engine, clock: Clock) -> None:
    case_id = _claimed(sop)
    sop.fire(case_id, "handle", actor="bob")  # bob handled it in the queue
    manager = sop.case(case_id).assignee
    assert manager is not None
    sop.fire(case_id, "recheck", actor=manager)
    assert sop.case(case_id).assignee == "bob"  # assign: {fired_by: handle}
    with pytest.raises(NotPermitted):
        sop.fire(case_id, "confirm", actor="alice")
    # When a stand-in fired the earlier step, the person they stood in for is the specialist.
    other = sop.start("ticket", {"title": "fan"}, actor="alice").case.id
    sop.fire(other, "claim", actor="alice")
    sop.delegate("alice", "bob", actor="alice", ends_at=clock.now + timedelta(hours=1))
    sop.fire(other, "handle", actor="bob")
    sop.fire(other, "recheck", actor=str(sop.case(other).assignee))
    assert sop.case(other).assignee == "alice"
    sop.fire(case_id, "confirm", actor="bob")
    assert sop.verify().ok, sop.verify().findings


def test_the_diagram_shows_assignment_control_and_loops() -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    for form in ("mermaid", "dot"):
        chart = CliRunner().invoke(cli, ["diagram", str(CONTROL / "ticket.yaml"), "--format", form]).stdout
        assert "control: cancel by manager; suspend by manager, employee (and administrators)" in chart
        for words in ("claimed by employee", "least loaded manager", "who fired handle"):
            assert f"assign: {words}" in chart
        assert "note (stays)" in chart and "pass_on (re-enters)" in chart


def test_show_says_where_the_work_item_stands_and_that_a_case_is_suspended(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.test_cli import Sop

    sop = Sop(f"sqlite:///{tmp_path / 'x.db'}", CliRunner())
    sop.ok("deploy", str(CONTROL))
    case = sop.start("ticket", "alice", {"title": "lamp"})
    assert "work     offered to employee: nobody has claimed it" in sop.ok("show", str(case)).stdout
    sop.ok("fire", str(case), "claim", user="bob")
    assert "work     allocated to bob, not started yet" in sop.ok("show", str(case)).stdout
    sop.ok("start-work", str(case), user="bob")
    assert "work     started by bob, 0m ago" in sop.ok("show", str(case)).stdout
    sop.ok("suspend", str(case), "--reason", "hold", user="bob")
    assert "(suspended: resume it to go on)" in sop.ok("show", str(case)).stdout


# -- work in progress per person ---------------------------------------------------------------------------


@pytest.fixture
def limited(database_url: str, clock: Clock, tmp_path: Path) -> Iterator[Engine]:
    """The control fixture with at most 2 open cases per employee (wip_limit)."""
    folder = tmp_path / "limited"
    folder.mkdir()
    ticket = (CONTROL / "ticket.yaml").read_text(encoding="utf-8")
    (folder / "ticket.yaml").write_text(ticket, encoding="utf-8")
    org = (CONTROL / "org.yaml").read_text(encoding="utf-8")
    limited_org = org.replace("manager: manager}", "manager: manager, wip_limit: 2}", 1)
    assert limited_org != org
    (folder / "org.yaml").write_text(limited_org, encoding="utf-8")
    yield from engine_on(database_url, clock, folder)


def test_a_claim_beyond_the_wip_limit_is_refused(limited: Engine) -> None:
    sop = limited
    cases = [sop.start("ticket", {"title": f"t{i}"}, actor="alice").case.id for i in range(3)]
    first = sop.fire(cases[0], "claim", actor="bob")
    assert first.record.detail == {"claimed_by": "bob", "held": 0}
    sop.fire(cases[1], "claim", actor="bob")
    with pytest.raises(NotPermitted, match=r"holds 2 open case\(s\).*wip_limit 2"):
        sop.fire(cases[2], "claim", actor="bob")
    assert sop.history(cases[2])[-1].outcome == "refused"
    sop.cancel(cases[0], actor="root", reason="duplicate")  # one finished: room for another
    sop.fire(cases[2], "claim", actor="bob")
    assert sop.verify().ok, sop.verify().findings


def test_not_by_passes_by_the_person_who_did_it_last_time(sop: Engine) -> None:
    case_id = _claimed(sop)
    sop.fire(case_id, "handle", actor="bob")
    first = sop.case(case_id).assignee
    assert first is not None
    sop.fire(case_id, "submit", actor=first)
    others = [m for m in ("mia", "max", "dual") if m != first]
    sop.fire(case_id, "reject", actor=others[0])  # back to the queue
    # Every other manager now holds two open cases: least loaded alone would pick `first` again.
    for manager in others:
        for i in range(2):
            extra = sop.start("ticket", {"title": f"{manager}{i}"}, actor="alice").case.id
            sop.fire(extra, "claim", actor="alice")
            sop.fire(extra, "handle", actor="alice")
            if sop.case(extra).assignee != manager:
                sop.reassign(extra, manager, actor="root")
    sop.fire(case_id, "claim", actor="bob")
    sop.fire(case_id, "handle", actor="bob")
    assert sop.case(case_id).assignee in others  # not_by: [fired:submit] passes `first` by
    assert sop.verify().ok, sop.verify().findings


def test_not_by_on_a_claim_keeps_the_excluded_from_claiming(tmp_path: Path, sqlite_url: str) -> None:
    folder = tmp_path / "claim"
    folder.mkdir()
    ticket = (CONTROL / "ticket.yaml").read_text(encoding="utf-8")
    changed = ticket.replace("assign: {claim: employee}", "assign: {claim: employee, not_by: [$starter]}")
    assert changed != ticket
    (folder / "ticket.yaml").write_text(changed, encoding="utf-8")
    (folder / "org.yaml").write_text((CONTROL / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for sop in engine_on(sqlite_url, Clock(), folder):
        case_id = sop.start("ticket", {"title": "own"}, actor="alice").case.id
        with pytest.raises(NotPermitted, match="started the case and may not claim"):
            sop.fire(case_id, "claim", actor="alice")
        assert sop.fire(case_id, "claim", actor="bob").case.assignee == "bob"
        assert sop.verify().ok


def test_round_robin_gives_each_case_to_the_next_member_in_turn(sop: Engine) -> None:
    managers = list(sop.org().members("manager"))  # mia, max, dual: the org's order
    given = []
    for i in range(len(managers) + 1):
        case_id = sop.start("rota", {}, actor="alice").case.id
        sop.fire(case_id, "dispatch", actor="alice")
        given.append(sop.case(case_id).assignee)
        if i == 1:
            sop.fire(case_id, "back", actor=str(given[-1]))  # leaving and coming back takes a new turn
            sop.fire(case_id, "dispatch", actor="alice")
            given.append(sop.case(case_id).assignee)
    assert given == [*managers, managers[0], managers[1]]
    assert sop.verify().ok, sop.verify().findings


def test_round_robin_at_the_start_of_a_case(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "rota"
    folder.mkdir()
    rota = (CONTROL / "rota.yaml").read_text(encoding="utf-8").replace("initial: waiting", "initial: on_duty")
    (folder / "rota.yaml").write_text(rota, encoding="utf-8")
    (folder / "org.yaml").write_text((CONTROL / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for sop in engine_on(database_url, Clock(), folder):
        given = [sop.start("rota", {}, actor="alice").case.assignee for _ in range(4)]
        managers = list(sop.org().members("manager"))
        assert given == [*managers, managers[0]]
        assert sop.verify().ok, sop.verify().findings



def _rota_limited(database_url: str, clock: Clock, tmp_path: Path, assign: str) -> Iterator[Engine]:
    """The rota, its managers given by `assign`, with at most 1 open case per manager (wip_limit)."""
    folder = tmp_path / "rota-limited"
    folder.mkdir()
    rota = (CONTROL / "rota.yaml").read_text(encoding="utf-8")
    (folder / "rota.yaml").write_text(rota.replace("{round_robin: manager}", assign), encoding="utf-8")
    org = (CONTROL / "org.yaml").read_text(encoding="utf-8")
    manager = "manager: {title: {zh: 经理, en: Manager}, department: office"
    limited_org = org.replace(manager + "}", manager + ", wip_limit: 1}")
    assert limited_org != org
    (folder / "org.yaml").write_text(limited_org, encoding="utf-8")
    yield from engine_on(database_url, clock, folder)


def _dispatched(sop: Engine) -> int:
    case_id = sop.start("rota", {}, actor="alice").case.id
    sop.fire(case_id, "dispatch", actor="alice")
    return case_id


def test_round_robin_passes_by_a_member_at_the_wip_limit(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    for sop in _rota_limited(database_url, clock, tmp_path, "{round_robin: manager}"):
        cases = [_dispatched(sop) for _ in range(3)]
        assert [sop.case(c).assignee for c in cases] == ["mia", "max", "dual"]
        # Everyone holds one: the case still goes to whose turn it is, noted as over the limit.
        crowded = _dispatched(sop)
        assert sop.case(crowded).assignee == "mia"
        noted = sop.history(crowded)[-1].detail["wip"]
        assert noted == {"limit": 1, "held": {"mia": 1, "max": 1, "dual": 1}, "over_limit": True}
        sop.fire(cases[0], "done", actor="mia")
        sop.fire(crowded, "done", actor="mia")
        # max and dual are at their limit, so the turn after mia passes them by and comes back to mia.
        passed = _dispatched(sop)
        assert sop.case(passed).assignee == "mia"
        assert sop.history(passed)[-1].detail["wip"] == {"limit": 1, "held": {"mia": 0, "max": 1, "dual": 1}}
        assert sop.verify().ok, sop.verify().findings


def test_least_loaded_at_the_wip_limit_is_noted_and_verified(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    for sop in _rota_limited(database_url, clock, tmp_path, "{least_loaded: manager}"):
        cases = [_dispatched(sop) for _ in range(4)]
        assert [sop.case(c).assignee for c in cases] == ["mia", "max", "dual", "mia"]
        assert "over_limit" not in sop.history(cases[2])[-1].detail["wip"]
        noted = sop.history(cases[3])[-1].detail["wip"]
        assert noted == {"limit": 1, "held": {"mia": 1, "max": 1, "dual": 1}, "over_limit": True}
        assert sop.verify().ok, sop.verify().findings


def test_a_turn_given_to_a_member_at_the_limit_is_found_by_verify(
    database_url: str, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round-robin turn written for a member at the wip_limit while another was under it is named by
    `audit verify`, which decides the turn again from what each member was recorded to hold."""
    from sopflow.engine import step

    real = step._work_in_progress

    def passing_nobody_by(
        role: str, members: list[str], people: step.People, detail: dict[str, Any]
    ) -> dict[str, int] | None:
        return real(role, list(members), people, detail)  # records what each held, skips nobody

    for sop in _rota_limited(database_url, clock, tmp_path, "{round_robin: manager}"):
        cases = [_dispatched(sop) for _ in range(4)]  # mia, max, dual, and mia again over the limit
        sop.fire(cases[2], "done", actor="dual")  # only dual is under the limit now
        monkeypatch.setattr(step, "_work_in_progress", passing_nobody_by)
        wrong = _dispatched(sop)
        monkeypatch.undo()
        assert sop.case(wrong).assignee == "max"  # the turn after mia, though max is at the limit
        assert sop.verify(cases[3]).ok
        report = sop.verify(wrong)
        assert [(f.case_id, f.seq) for f in report.findings] == [(wrong, 2)]
        assert "assignee" in report.findings[0].problem
