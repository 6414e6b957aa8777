"""The durable runtime on SQLite and PostgreSQL: start, fire, refusals, idempotency, conflicts, deploys,
versions, queries, approvals, timers and the audit trail."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sopflow.engine import (
    Conflict,
    DefinitionError,
    GuardRefused,
    InvalidData,
    NotAvailable,
    NotFound,
    NotPermitted,
)
from sopflow.engine.runtime import Engine
from tests.conftest import MINI, Clock, engine_on


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def small(engine: Engine, amount: float = 100) -> int:
    return engine.start("expense", {"amount": amount, "purpose": "taxi"}, actor="alice").case.id


def test_start_and_fire_move_the_case_and_append_records(engine: Engine) -> None:
    case_id = small(engine)
    case = engine.case(case_id)
    assert (case.state, case.version, case.starter, case.open) == ("draft", 1, "alice", True)
    result = engine.fire(case_id, "submit", actor="alice")
    assert result.case.state == "manager_review"
    assert result.case.version == 2
    assert result.case.assignee in ("mia", "max")
    assert result.record.detail["routes"][0]["to"] == "manager_review"
    assert result.record.detail["routes"][0]["values"] == {"amount": 100}
    history = engine.history(case_id)
    assert [r.event for r in history] == ["start", "submit"]
    assert history[1].prev_hash == history[0].hash
    assert engine.verify(case_id).ok


def test_payload_is_copied_into_data_and_recorded_as_a_change(engine: Engine) -> None:
    case_id = small(engine)
    assignee = engine.fire(case_id, "submit", actor="alice").case.assignee
    assert assignee is not None
    result = engine.fire(case_id, "approve_claim", actor=assignee, payload={"note": "ok"}, comment="fine")
    assert result.case.state == "paid"
    assert not result.case.open
    assert result.case.data["note"] == "ok"
    assert result.record.data_change == {"note": [None, "ok"]}
    assert result.record.comment == "fine"


def test_not_permitted_is_audited_and_changes_nothing(engine: Engine) -> None:
    case_id = small(engine)
    with pytest.raises(NotPermitted, match="bob may not fire `submit`"):
        engine.fire(case_id, "submit", actor="bob")
    case = engine.case(case_id)
    assert (case.state, case.version) == ("draft", 1)
    last = engine.history(case_id)[-1]
    assert (last.outcome, last.actor, last.event, last.to_state) == ("refused", "bob", "submit", None)
    assert last.reason is not None and last.reason.startswith("not-permitted")
    assert engine.verify(case_id).ok


def test_guard_refusal_is_audited_with_the_explanation(engine: Engine) -> None:
    case_id = small(engine, amount=800)
    assignee = engine.fire(case_id, "submit", actor="alice").case.assignee
    assert assignee is not None
    with pytest.raises(GuardRefused, match="a manager approves claims up to 500 alone"):
        engine.fire(case_id, "approve_claim", actor=assignee, payload={"note": "x"})
    last = engine.history(case_id)[-1]
    assert last.outcome == "refused"
    assert last.detail["values"] == {"amount": 800}
    assert engine.case(case_id).state == "manager_review"


def test_invalid_data_and_unknown_events_write_nothing(engine: Engine) -> None:
    with pytest.raises(InvalidData, match="amount"):
        engine.start("expense", {"purpose": "taxi"}, actor="alice")
    case_id = small(engine)
    assignee = engine.fire(case_id, "submit", actor="alice").case.assignee
    assert assignee is not None
    before = len(engine.history(case_id))
    with pytest.raises(InvalidData, match="note"):
        engine.fire(case_id, "approve_claim", actor=assignee, payload={})
    with pytest.raises(NotAvailable, match="events here"):
        engine.fire(case_id, "fly", actor=assignee)
    assert len(engine.history(case_id)) == before
    with pytest.raises(NotFound, match="case 999"):
        engine.fire(999, "submit", actor="alice")
    with pytest.raises(NotFound, match="did you mean `alice`"):
        engine.fire(case_id, "submit", actor="alicia")


def test_stale_version_is_a_conflict_and_writes_nothing(engine: Engine) -> None:
    case_id = small(engine)
    engine.fire(case_id, "submit", actor="alice", expect_version=1)
    before = len(engine.history(case_id))
    with pytest.raises(Conflict, match="version 2, not 1"):
        engine.fire(case_id, "send_back", actor="mia", expect_version=1)
    assert len(engine.history(case_id)) == before


def test_idempotency_keys_return_the_first_result(engine: Engine) -> None:
    first = engine.start("expense", {"amount": 5, "purpose": "tea"}, actor="alice", key="k-1")
    again = engine.start("expense", {"amount": 5, "purpose": "tea"}, actor="alice", key="k-1")
    assert again.replayed and again.case.id == first.case.id
    one = engine.fire(first.case.id, "submit", actor="alice", key="f-1")
    two = engine.fire(first.case.id, "submit", actor="alice", key="f-1")
    assert not one.replayed and two.replayed
    assert two.record.hash == one.record.hash
    assert [r.event for r in engine.history(first.case.id)] == ["start", "submit"]
    with pytest.raises(Conflict, match="used by another person: alice fired `submit` on case 1"):
        engine.fire(first.case.id, "send_back", actor="mia", key="f-1")


def test_redeploy_is_a_noop_and_changed_content_needs_a_new_version(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    shutil.copytree(MINI, folder)
    assert engine.deploy([folder]).definitions["expense@1"] is False
    path = folder / "expense.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("within: 2d", "within: 3d"), encoding="utf-8")
    with pytest.raises(Conflict, match="bump `version:`"):
        engine.deploy([folder])
    old_case = small(engine)
    path.write_text(path.read_text(encoding="utf-8").replace("version: 1", "version: 2"), encoding="utf-8")
    assert engine.deploy([folder]).definitions["expense@2"] is True
    assert engine.case(old_case).definition_version == 1
    new_case = small(engine)
    assert engine.case(new_case).definition_version == 2
    engine.fire(old_case, "submit", actor="alice")
    assert engine.verify().ok


def test_a_broken_definition_deploys_nothing(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    shutil.copytree(MINI, folder)
    (folder / "broken.yaml").write_text("id: broken\nversion: 1\n", encoding="utf-8")
    with pytest.raises(DefinitionError):
        engine.deploy([folder])
    assert [d.key for d in engine.definitions()] == ["board-vote@1", "expense@1"]


def test_joint_approval_needs_two_distinct_people(engine: Engine) -> None:
    case_id = small(engine, amount=5000)
    assert engine.fire(case_id, "submit", actor="alice").case.state == "joint"
    assert engine.fire(case_id, "approve", actor="dual").case.state == "joint"
    with pytest.raises(NotPermitted, match="already voted"):
        engine.fire(case_id, "approve", actor="dual")
    progress = engine.approval_progress(case_id)
    assert progress is not None and "dual" in progress
    assert engine.fire(case_id, "approve", actor="fay").case.state == "paid"


def test_a_veto_rejects(engine: Engine) -> None:
    case_id = small(engine, amount=5000)
    engine.fire(case_id, "submit", actor="alice")
    engine.fire(case_id, "approve", actor="mia")
    assert engine.fire(case_id, "reject", actor="fay", comment="no receipt").case.state == "draft"


def test_deadline_timer_starts_with_its_span_and_is_cancelled_when_it_ends(
    engine: Engine, clock: Clock
) -> None:
    case_id = small(engine)
    assert engine.deadlines(case_id) == []
    engine.fire(case_id, "submit", actor="alice")
    (deadline,) = engine.deadlines(case_id)
    assert deadline.name == "pay-within-2d"
    assert deadline.due_at == clock.now + timedelta(days=2)
    clock.advance(days=3)
    assert deadline.left(clock.now) < 0
    assignee = engine.case(case_id).assignee
    assert assignee is not None
    engine.fire(case_id, "approve_claim", actor=assignee, payload={"note": "late"})
    assert engine.deadlines(case_id) == []


def test_queries_filter_page_and_never_list_closed_cases_unless_asked(engine: Engine, clock: Clock) -> None:
    ids = [small(engine, amount=a) for a in (10, 20, 30, 40)]
    clock.advance(hours=1)
    engine.fire(ids[0], "cancel", actor="alice")
    engine.fire(ids[1], "submit", actor="alice")
    assert [c.id for c in engine.cases(state="draft")] == ids[2:]
    assert [c.id for c in engine.cases(definition="expense", open=True, limit=2)] == ids[1:3]
    assert [c.id for c in engine.cases(open=True, after_id=ids[2])] == [ids[3]]
    assert [c.id for c in engine.cases(data={"amount": 30})] == [ids[2]]
    assert [c.id for c in engine.cases(data={"purpose": "taxi"}, open=False)] == [ids[0]]
    assignee = engine.case(ids[1]).assignee
    assert [c.id for c in engine.cases(assignee=assignee)] == [ids[1]]


def test_options_say_who_may_do_what_and_why_not(engine: Engine) -> None:
    case_id = small(engine)
    options = {o.event: o for o in engine.options(case_id, "bob")}
    assert set(options) == {"submit", "cancel"}
    assert not options["submit"].allowed
    assert options["submit"].reason is not None and "may not fire" in options["submit"].reason
    mine = {o.event: o for o in engine.options(case_id, "alice")}
    assert mine["submit"].allowed and mine["cancel"].allowed


def test_audit_rows_cannot_be_updated_or_deleted(engine: Engine) -> None:
    case_id = small(engine)
    from sqlalchemy import text

    for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"), engine.store.engine.begin() as conn:
            conn.execute(text(statement))
    assert engine.history(case_id)[0].actor == "alice"


def _bypass_triggers(engine: Engine, statement: str) -> None:
    from sqlalchemy import text

    with engine.store.engine.begin() as conn:
        if engine.store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER audit_no_update"))
            conn.execute(text("DROP TRIGGER audit_no_delete"))
        else:
            conn.execute(text("ALTER TABLE audit DISABLE TRIGGER USER"))
        conn.execute(text(statement))


@pytest.mark.parametrize(
    ("statement", "seq", "problem"),
    [
        ("UPDATE audit SET actor = 'mallory' WHERE seq = 2", 2, "edited"),
        ("DELETE FROM audit WHERE seq = 2", 2, "missing"),
        ("DELETE FROM audit WHERE seq = 3", 3, "removed"),
    ],
)
def test_tampering_breaks_the_chain_and_verify_names_the_record(
    engine: Engine, statement: str, seq: int, problem: str
) -> None:
    case_id = small(engine)
    engine.fire(case_id, "submit", actor="alice")
    engine.fire(case_id, "send_back", actor="mia")
    other = small(engine)
    assert engine.verify().ok
    _bypass_triggers(engine, statement.replace("WHERE", f"WHERE case_id = {case_id} AND"))
    report = engine.verify()
    assert not report.ok
    (finding,) = report.findings
    assert (finding.case_id, finding.seq) == (case_id, seq)
    assert problem in finding.problem
    assert engine.verify(other).ok


def test_a_forged_state_fails_replay(engine: Engine) -> None:
    from sqlalchemy import text

    case_id = small(engine)
    with engine.store.engine.begin() as conn:
        conn.execute(text(f"UPDATE cases SET state = 'paid' WHERE id = {case_id}"))
    (finding,) = engine.verify(case_id).findings
    assert "the case's state is `paid`, its records give `draft`" in finding.problem
