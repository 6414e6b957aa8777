"""Sub-processes on SQLite and PostgreSQL: a state starts a case of another definition in the transaction
that enters it, the child's closing resumes the parent as an audited step of the system, a parent that
leaves the waiting state or closes closes its open children (and theirs), and `audit verify` checks the
links both ways. The fixtures: purchase → quote → sign-off (tests/fixtures/nested)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from sopflow.engine import Engine
from sopflow.engine.definition.model import CLOSED_BY_PARENT, RESUME
from sopflow.engine.errors import InvalidData, NotAvailable, NotPermitted
from sopflow.engine.worker import Worker
from tests.conftest import ROOT, Clock, engine_on

NESTED = ROOT / "tests" / "fixtures" / "nested"


@pytest.fixture
def sop(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, NESTED)


def _requested(sop: Engine, amount: float = 500) -> tuple[int, int]:
    case = sop.start("purchase", {"item": "laptop", "amount": amount}, actor="alice").case
    sop.fire(case.id, "request", actor="alice")
    _parent, children = sop.links(case.id)
    assert len(children) == 1
    return case.id, children[0].case_id


def test_entering_the_state_starts_the_child_with_data_mapped_in(sop: Engine) -> None:
    parent, child = _requested(sop)
    assert sop.case(parent).state == "quoting"
    quote = sop.case(child)
    assert (quote.definition_id, quote.state, quote.open) == ("quote", "asking", True)
    assert dict(quote.data) == {"item": "laptop", "budget": 500}
    assert quote.starter == "alice"  # whoever moved the parent into the state
    link, children = sop.links(child)
    assert link is not None and (link.parent_case_id, link.parent_seq) == (parent, 2)
    assert children == []
    assert sop.history(child)[0].detail["parent"] == {"case": parent, "seq": 2}
    assert sop.deadlines(child)[0].name == "quote-in-1d"


def test_the_child_closing_resumes_the_parent_through_a_grandchild(sop: Engine) -> None:
    parent, child = _requested(sop)
    sop.fire(child, "quote", actor="fay", payload={"price": 420})
    (grandchild,) = sop.links(child)[1]
    assert sop.case(grandchild.case_id).data == {"what": "laptop"}
    sop.fire(grandchild.case_id, "sign", actor="mia")
    # One step closed the sign-off, resumed the quote (which closed) and resumed the purchase.
    assert sop.case(grandchild.case_id).state == "signed"
    assert (sop.case(child).state, sop.case(child).open) == ("accepted", False)
    purchase = sop.case(parent)
    assert (purchase.state, purchase.open) == ("ordered", False)
    assert purchase.data["price"] == 420
    last = sop.history(parent)[-1]
    assert (last.actor, last.event, last.from_state, last.to_state) == (
        "$system",
        RESUME,
        "quoting",
        "ordered",
    )
    assert last.payload == {"case": child, "seq": 3, "outcome": "accepted", "values": {"price": 420}}
    assert sop.verify().ok, sop.verify().findings


def test_an_outcome_maps_to_its_own_state(sop: Engine) -> None:
    parent, child = _requested(sop)
    sop.fire(child, "decline", actor="fay")
    assert sop.case(parent).state == "draft"
    # Entering the state again starts a new child.
    sop.fire(parent, "request", actor="alice")
    assert [c.open for c in sop.links(parent)[1]] == [False, True]
    assert sop.verify().ok, sop.verify().findings


def test_an_event_back_into_the_same_state_keeps_the_child(sop: Engine) -> None:
    parent, child = _requested(sop)
    sop.fire(parent, "ask_again", actor="alice")  # stays in `quoting`, as any event leading back does
    assert [(c.case_id, c.open) for c in sop.links(parent)[1]] == [(child, True)]
    sop.fire(child, "decline", actor="fay")
    assert sop.case(parent).state == "draft"
    assert sop.verify().ok, sop.verify().findings


def test_cancelling_the_parent_closes_the_open_child_and_grandchild(sop: Engine) -> None:
    parent, child = _requested(sop)
    sop.fire(child, "quote", actor="fay", payload={"price": 420})
    (grandchild,) = sop.links(child)[1]
    sop.fire(parent, "cancel", actor="alice")
    assert sop.case(parent).state == "cancelled"
    for cid, state in ((child, "signing"), (grandchild.case_id, "waiting")):
        closed = sop.case(cid)
        assert (closed.state, closed.open) == (state, False)
        last = sop.history(cid)[-1]
        assert (last.actor, last.event, last.to_state) == ("$system", CLOSED_BY_PARENT, state)
    assert sop.history(child)[-1].detail["parent"] == {"case": parent, "seq": 3}
    with pytest.raises(NotAvailable, match="closed"):
        sop.fire(grandchild.case_id, "sign", actor="mia")
    with pytest.raises(NotAvailable, match="closed"):
        sop.reassign(child, "max", actor="root")
    assert sop.verify().ok, sop.verify().findings


def test_a_timeout_that_leaves_the_state_closes_the_child_and_its_timers(sop: Engine, clock: Clock) -> None:
    parent, child = _requested(sop)
    worker = Worker(sop, name="w1")
    clock.advance(days=1, minutes=1)
    worker.tick()  # the quote's deadline breaches: its rung notifies, the quote stays open
    assert sop.case(child).open
    clock.advance(days=1)
    worker.tick()  # the purchase's timeout fires give_up: the quote is closed with it
    assert sop.case(parent).state == "cancelled"
    assert not sop.case(child).open
    assert sop.deadlines(child) == []
    assert sop.verify().ok, sop.verify().findings


def test_a_childs_timeout_that_closes_it_resumes_the_parents_up_the_chain(sop: Engine, clock: Clock) -> None:
    parent, child = _requested(sop)
    sop.fire(child, "quote", actor="fay", payload={"price": 99})
    (grandchild,) = sop.links(child)[1]
    clock.advance(days=1, seconds=1)
    Worker(sop, name="w1").tick()  # the sign-off expires: the quote is declined, the purchase back in draft
    assert sop.case(grandchild.case_id).state == "refused"
    assert (sop.case(child).state, sop.case(child).open) == ("declined", False)
    assert sop.case(parent).state == "draft"
    assert sop.history(parent)[-1].event == RESUME
    assert sop.verify().ok, sop.verify().findings


def test_the_engines_resume_event_may_not_be_written_in_a_subprocess_state(tmp_path: Path) -> None:
    from sopflow.engine.definition.validate import validate_paths

    bad = tmp_path / "clash.yaml"
    bad.write_text(
        (NESTED / "quote.yaml")
        .read_text(encoding="utf-8")
        .replace(
            "      on: {signed: accepted, refused: declined}",
            "      on: {signed: accepted, refused: declined}\n"
            "    on:\n      subprocess_closed: {to: accepted}",
        ),
        encoding="utf-8",
    )
    shutil.copy(NESTED / "sign-off.yaml", tmp_path / "sign-off.yaml")
    shutil.copy(NESTED / "org.yaml", tmp_path / "org.yaml")
    problems = validate_paths([bad]).problems
    assert [(p.code, "subprocess_closed" in p.message) for p in problems] == [("duplicate-event", True)]


def test_a_child_that_cannot_start_leaves_nothing_written(sop: Engine) -> None:
    case = sop.start("purchase", {"item": "pen", "amount": 0}, actor="alice").case
    with pytest.raises(InvalidData, match=r"sub-process `quote`.*cannot start"):
        sop.fire(case.id, "request", actor="alice")
    assert sop.case(case.id).state == "draft"
    assert sop.links(case.id) == (None, [])
    assert [c.id for c in sop.cases()] == [case.id]


def test_no_person_may_resume_the_parent(sop: Engine) -> None:
    parent, child = _requested(sop)
    with pytest.raises(NotPermitted, match="the engine resumes"):
        sop.fire(parent, RESUME, actor="alice", payload={"case": child, "outcome": "accepted"})
    assert sop.case(parent).state == "quoting"
    assert sop.verify().ok, sop.verify().findings


def test_verify_names_a_link_rewritten_in_the_case_row(sop: Engine) -> None:
    _parent, child = _requested(sop)
    with sop.store.engine.begin() as conn:
        conn.execute(text("UPDATE cases SET parent_seq = 1 WHERE id = :id"), {"id": child})
    problems = [f.problem for f in sop.verify().findings]
    assert any("its start names" in p for p in problems), problems


def test_verify_names_a_child_deleted_from_under_its_parent(sop: Engine) -> None:
    parent, child = _requested(sop)
    with sop.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE cases SET parent_case_id = NULL, parent_seq = NULL WHERE id = :id"), {"id": child}
        )
    findings = sop.verify().findings
    assert {(f.case_id, f.seq) for f in findings} >= {(parent, 2), (child, 1)}, findings


def test_the_content_pipeline_runs_content_review_as_its_review(database_url: str, clock: Clock) -> None:
    for sop in engine_on(database_url, clock, ROOT / "definitions"):
        case = sop.start("content-pipeline", {"topic": "开学季"}, actor="li.na").case
        plan = {"formats": ["article"], "planned_date": "2026-08-25", "planned_channel": "公众号"}
        sop.fire(case.id, "submit_plan", actor="li.na", payload=plan)
        sop.fire(case.id, "submit_draft", actor="fu.xiao", payload={"draft_url": "https://x/1"})
        (review,) = sop.links(case.id)[1]
        assert review.definition_id == "content-review"
        assert dict(sop.case(review.case_id).data) == {
            "title": "开学季",
            "origin": "original",
            "channel": "公众号",
        }
        sop.fire(review.case_id, "submit", actor="li.na", payload={"material_url": "https://m/1"})
        assert [d.name for d in sop.deadlines(review.case_id)] == ["publish-within-4h"]
        sop.fire(review.case_id, "claim", actor="wang.fang")
        sop.fire(
            review.case_id,
            "pass_screening",
            actor="wang.fang",
            payload={"topic_compliant": True, "typo_free": True, "note": "ok"},
        )
        sop.fire(review.case_id, "reject_content", actor="chen.jing", payload={"reason": "与品牌调性不符"})
        pipeline = sop.case(case.id)
        assert pipeline.state == "creation"
        assert pipeline.data["review_rejection"] == "与品牌调性不符"
        assert sop.verify().ok, sop.verify().findings


def test_show_history_and_diagram_link_parent_and_child(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    db = f"sqlite:///{tmp_path / 'links.db'}"
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--db", db, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("deploy", str(NESTED))
    run("--as", "alice", "start", "purchase", "--data", '{"item": "desk", "amount": 300}')
    run("--as", "alice", "fire", "1", "request")
    assert "child    case 2  quote  asking  open" in run("show", "1")
    assert "parent   case 1 (started this case by its record 2)" in run("show", "2")
    shown = json.loads(run("--json", "show", "1"))
    assert shown["children"] == [{"case": 2, "definition": "quote", "state": "asking", "open": True}]
    assert "[sub-process of case 1]" in run("history", "2")
    assert "%% sub-process: case 2 (quote, asking, open)" in run("diagram", "1")
    assert "// parent: case 1" in run("diagram", "2", "--format", "dot")
    run("--as", "alice", "fire", "1", "cancel")
    assert "[closed by case 1]" in run("history", "2")
    assert "(closed)" in run("show", "2")
    assert "sub-process: quote" in run("diagram", str(NESTED / "purchase.yaml"))


def test_the_documented_example_runs(database_url: str, clock: Clock) -> None:
    """docs/language.md's campaign-launch runs content-publish as its announcement's review."""
    for sop in engine_on(database_url, clock, ROOT / "docs" / "examples"):
        case = sop.start("campaign-launch", {"name": "双十一大促"}, actor="sun.li").case
        sop.fire(case.id, "announce", actor="sun.li")
        (announcement,) = sop.links(case.id)[1]
        assert sop.case(announcement.case_id).data == {"headline": "双十一大促"}
        sop.fire(announcement.case_id, "submit", actor="chen.jing")
        sop.fire(announcement.case_id, "send_back", actor="li.lei", payload={"comment": "标题太长"})
        sop.fire(announcement.case_id, "withdraw", actor="chen.jing")
        assert sop.case(case.id).state == "preparing"
        assert sop.case(case.id).data["announcement_feedback"] == "标题太长"
        sop.fire(case.id, "announce", actor="sun.li")
        sop.fire(case.id, "cancel", actor="zhou.qiang")
        assert [(k.state, k.open) for k in sop.links(case.id)[1]] == [
            ("withdrawn", False),
            ("drafting", False),
        ]
        assert sop.verify().ok, sop.verify().findings


def test_the_migration_adds_the_links_to_cases_stored_before(database_url: str) -> None:
    import sqlalchemy as sa

    from sopflow.engine.store import database
    from sopflow.engine.store.tables import cases

    engine = database.create(database_url)
    try:
        database.upgrade(engine, "0005")
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("cases")}
        assert "parent_case_id" not in columns
        at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        old = {
            "id": 1, "definition_id": "quote", "definition_version": 1, "state": "asking", "open": True,
            "data": "{}", "version": 1, "starter": "fay", "entered_seq": 1, "entered_at": at,
            "created_at": at, "updated_at": at, "audit_seq": 1, "last_hash": "h",
        }  # fmt: skip
        with engine.begin() as conn:
            conn.execute(sa.insert(cases), [old])
        assert database.upgrade(engine) == database.SCHEMA_REVISION
        with engine.connect() as conn:
            found = conn.execute(sa.select(cases.c.parent_case_id, cases.c.parent_seq)).one()
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("cases")}
        assert tuple(found) == (None, None)
        assert "ix_cases_parent" in indexes
    finally:
        engine.dispose()


def test_the_4h_rule_of_content_review_runs_inside_the_pipeline(database_url: str, clock: Clock) -> None:
    for sop in engine_on(database_url, clock, ROOT / "definitions"):
        case = sop.start("content-pipeline", {"topic": "开学季"}, actor="li.na").case
        plan = {"formats": ["article"], "planned_date": "2026-08-25", "planned_channel": "公众号"}
        sop.fire(case.id, "submit_plan", actor="li.na", payload=plan)
        sop.fire(case.id, "submit_draft", actor="fu.xiao", payload={"draft_url": "https://x/1"})
        (review,) = sop.links(case.id)[1]
        sop.fire(review.case_id, "submit", actor="li.na", payload={"material_url": "https://m/1"})
        clock.advance(hours=4, seconds=1)
        Worker(sop, name="w1").tick()
        assert [(o.case_id, o.name) for o in sop.overdue()] == [(review.case_id, "publish-within-4h")]
        assert sop.case(case.id).state == "manager_review"  # the pipeline waits on its review
        assert sop.verify().ok, sop.verify().findings


def _race(first: tuple[Engine, int, str, str], second: tuple[Engine, int, str, str]) -> list[str]:
    """Fire two events at once from two engines; what each gave: done, retry (the database asked for
    another try) or the kind of its refusal."""
    import threading

    from sopflow.engine.errors import DatabaseUnavailable, SopflowError

    barrier = threading.Barrier(2)
    outcomes = ["", ""]

    def act(n: int, engine: Engine, case: int, event: str, actor: str) -> None:
        barrier.wait()
        try:
            engine.fire(case, event, actor=actor)
            outcomes[n] = "done"
        except DatabaseUnavailable:
            outcomes[n] = "retry"
        except SopflowError as exc:
            outcomes[n] = exc.kind

    threads = [threading.Thread(target=act, args=(n, *job)) for n, job in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_a_parent_cancelled_while_its_child_closes_ends_consistent(database_url: str, clock: Clock) -> None:
    """Two writers at once: one cancels the purchase, the other declines its quote. Whichever commits first
    wins; the other is refused (the case is closed, or its event is gone), the store trying it again when
    PostgreSQL broke a deadlock between the two rows; and the trail verifies."""
    for sop in engine_on(database_url, clock, NESTED):
        other = Engine(database_url, clock=clock)
        try:
            for _ in range(4):
                parent, child = _requested(sop)
                cancel, decline = _race((sop, parent, "cancel", "alice"), (other, child, "decline", "fay"))
                # Exactly one wins; the other is refused, also after a deadlock the store tried again.
                assert [cancel, decline].count("done") == 1 and "retry" not in (cancel, decline)
                purchase, quote = sop.case(parent), sop.case(child)
                assert not quote.open
                if cancel == "done":
                    assert purchase.state == "cancelled"
                    assert quote.state in ("asking", "declined")
                else:
                    assert (purchase.state, quote.state) == ("draft", "declined")
            assert sop.verify().ok, sop.verify().findings
        finally:
            other.close()


def test_simulate_acts_on_the_child_with_a_child_step() -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    steps = [
        'submit_plan@li.na={"formats": ["article"], "planned_date": "2026-08-25", "planned_channel": "App"}',
        'submit_draft@fu.xiao={"draft_url": "https://x/1"}',
        'child:submit@li.na={"material_url": "https://m/1"}',
        "child:claim@wang.fang",
        'child:reject_noncompliant@wang.fang={"reason": "不合规"}',
    ]
    pipeline = str(ROOT / "definitions" / "content-pipeline.yaml")
    result = CliRunner().invoke(
        cli, ["--json", "simulate", pipeline, *steps, "--data", '{"topic": "开学季"}'], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert [s.get("state") for s in answer["steps"]] == [
        "topic_planning", "creation", "manager_review", "manager_review", "manager_review", "creation",
    ]  # fmt: skip
    assert answer["data"]["review_rejection"] == "不合规"


def test_verify_names_a_parent_whose_row_was_deleted(sop: Engine) -> None:
    parent, child = _requested(sop)
    with sop.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM cases WHERE id = :id"), {"id": parent})
    findings = {(f.case_id, f.problem) for f in sop.verify().findings}
    assert (child, f"parent case {parent}, which started it, is gone (its row was deleted)") in findings
