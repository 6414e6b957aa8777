"""Tampering that used to pass `audit verify`, on SQLite and PostgreSQL: REPLACE on the append-only
tables, edited orgs and definitions, edited case rows (who started, who submitted, who holds it, the
version), forged votes and steps with recomputed hashes, a shortened delegation, a deleted case row.
Each must make verify name the record at fault."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from sopflow.engine import NotPermitted
from sopflow.engine.runtime import Engine
from sopflow.engine.verify import VerifyReport
from tests.conftest import MINI, Clock, engine_on
from tests.helpers.tamper import edit_record, run_sql


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def expense(engine: Engine, amount: float = 100, actor: str = "alice") -> int:
    return engine.start("expense", {"amount": amount, "purpose": "taxi"}, actor=actor).case.id


def finding(report: VerifyReport, case_id: int | None = None) -> tuple[int | None, str]:
    """The one finding of `report` (about `case_id`, when given): its record and its problem."""
    found = [f for f in report.findings if case_id is None or f.case_id == case_id]
    assert len(found) == 1, report.findings
    return found[0].seq, found[0].problem


# -- the database refuses ---------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["definitions", "orgs", "audit", "delegations"])
def test_replace_into_an_append_only_table_is_refused(engine: Engine, table: str) -> None:
    engine.delegate("mia", "max", actor="mia", ends_at=engine.clock() + timedelta(days=1))
    expense(engine)
    key = {"definitions": "definition_id", "orgs": "id", "audit": "case_id", "delegations": "id"}[table]
    with engine.store.engine.connect() as conn:
        columns = list(conn.execute(text(f"SELECT * FROM {table} ORDER BY {key} LIMIT 1")).mappings().one())
    names = ", ".join(columns)
    # SQLite's REPLACE deletes the row it collides with, firing no DELETE trigger; PostgreSQL's upsert
    # updates it, firing the UPDATE trigger. Both must be refused.
    if engine.store.dialect == "sqlite":
        statement = f"INSERT OR REPLACE INTO {table} ({names}) SELECT {names} FROM {table} LIMIT 1"
    else:
        first = columns[0]
        constraint = f"pk_{table}" if table in ("audit", "definitions") else f"{table}_pkey"
        statement = (
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {table} LIMIT 1 "
            f"ON CONFLICT ON CONSTRAINT {constraint} DO UPDATE SET {first} = EXCLUDED.{first}"
        )
    with pytest.raises(Exception, match="append-only"), engine.store.engine.begin() as conn:
        conn.execute(text(statement))


@pytest.mark.parametrize("statement", ["UPDATE orgs SET org_id = 'x'", "DELETE FROM orgs"])
def test_the_orgs_are_append_only(engine: Engine, statement: str) -> None:
    with pytest.raises(Exception, match="append-only"), engine.store.engine.begin() as conn:
        conn.execute(text(statement))
    assert engine.org().id == "mini-co"


# -- definitions and orgs -----------------------------------------------------------------------------


def test_a_definition_rewritten_in_place_is_named(engine: Engine) -> None:
    case_id = expense(engine, 800)
    engine.fire(case_id, "submit", actor="alice")
    assert engine.verify().ok
    # A looser guard, so that a manager alone approves 800: the text changes, its stored hash does not.
    run_sql(
        engine,
        "UPDATE definitions SET source_text = REPLACE(source_text, 'data.amount <= 500', "
        "'data.amount <= 5000')",
    )
    report = engine.verify()
    subjects = {f.subject: f.problem for f in report.findings if f.case_id is None}
    assert "rewritten" in subjects["definition expense@1"]


def test_a_definition_rewritten_with_its_hash_is_caught_by_the_records(engine: Engine) -> None:
    from sopflow.engine.definition.build import content_hash
    from sopflow.engine.definition.loader import parse_yaml

    case_id = expense(engine, 800)
    row = engine.store.definition("expense", 1)
    assert row is not None
    looser = row.source_text.replace("data.amount <= 500", "data.amount <= 5000")
    digest = content_hash(parse_yaml(looser, row.file).data)
    run_sql(
        engine,
        "UPDATE definitions SET source_text = :text, content_hash = :hash",
        params={"text": looser, "hash": digest},
    )
    seq, problem = finding(engine.verify(), case_id)
    assert seq == 1
    assert "was written under definition" in problem


def test_an_org_that_gives_someone_a_role_is_named(engine: Engine) -> None:
    case_id = expense(engine, 2000)
    engine.fire(case_id, "submit", actor="alice")
    engine.fire(case_id, "approve", actor="mia")
    # bob is made finance in the stored org, and his vote then counts.
    run_sql(engine, "UPDATE orgs SET source_text = REPLACE(source_text, 'roles: [employee], department', "
            "'roles: [employee, finance], department')")  # fmt: skip
    fresh = Engine(engine.database_url, clock=engine.clock)
    try:
        assert fresh.fire(case_id, "approve", actor="bob").case.state == "paid"
        report = fresh.verify()
    finally:
        fresh.close()
    assert not report.ok
    subjects = {f.subject: f.problem for f in report.findings if f.case_id is None}
    assert "rewritten" in subjects["org mini-co (deployment 1)"]


# -- case rows ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("starter", "'bob'"),
        ("submitter", "'mia'"),
        ("assignee", "'root'"),
        ("version", "7"),
        ("entered_seq", "1"),
        ("data", '\'{"amount": 1, "purpose": "taxi"}\''),
        ("state", "'paid'"),
        ("open", "false"),
    ],
)
def test_an_edited_case_row_is_named(engine: Engine, column: str, value: str) -> None:
    case_id = expense(engine)
    engine.fire(case_id, "submit", actor="alice")
    other = expense(engine)
    assert engine.verify().ok
    with engine.store.engine.begin() as conn:
        conn.execute(text(f"UPDATE cases SET {column} = {value} WHERE id = {case_id}"))
    report = engine.verify()
    seq, problem = finding(report)
    assert report.findings[0].case_id == case_id
    assert seq == 2
    assert f"the case's {column} is" in problem
    assert engine.verify(other).ok


def test_a_starter_changed_to_let_someone_else_act_is_named(engine: Engine) -> None:
    case_id = expense(engine)
    with engine.store.engine.begin() as conn:
        conn.execute(text(f"UPDATE cases SET starter = 'bob' WHERE id = {case_id}"))
    engine.fire(case_id, "submit", actor="bob")  # the runtime trusts the row: $starter is bob now
    seq, problem = finding(engine.verify(case_id))
    assert seq == 2
    assert "it was not allowed: bob may not fire `submit`" in problem


def test_a_submitter_changed_to_bypass_separation_of_duties_is_named(engine: Engine) -> None:
    case_id = expense(engine, 2000, actor="dual")
    engine.fire(case_id, "submit", actor="dual")
    with pytest.raises(NotPermitted, match="separation of duties"):
        engine.fire(case_id, "approve", actor="dual")
    with engine.store.engine.begin() as conn:
        conn.execute(text(f"UPDATE cases SET submitter = 'alice' WHERE id = {case_id}"))
    engine.fire(case_id, "approve", actor="dual")
    assert engine.fire(case_id, "approve", actor="fay").case.state == "paid"
    seq, problem = finding(engine.verify(case_id))
    assert seq == 4  # start, submit, the refusal, then dual's vote
    assert "separation of duties" in problem


def test_a_deleted_case_row_is_named(engine: Engine) -> None:
    case_id = expense(engine)
    expense(engine)
    with engine.store.engine.begin() as conn:
        conn.execute(text(f"DELETE FROM cases WHERE id = {case_id}"))
    seq, problem = finding(engine.verify(), case_id)
    assert seq == 1
    assert "case row is gone" in problem


# -- records rewritten with their hashes --------------------------------------------------------------


def test_a_vote_given_to_someone_else_is_named(engine: Engine) -> None:
    case_id = expense(engine, 2000)
    engine.fire(case_id, "submit", actor="alice")
    engine.fire(case_id, "approve", actor="mia")
    engine.fire(case_id, "approve", actor="fay")
    assert engine.verify(case_id).ok
    edit_record(engine, case_id, 4, actor="bob")
    seq, problem = finding(engine.verify(case_id))
    assert seq == 4
    assert "it was not allowed: bob may not vote" in problem


def test_a_vote_moved_to_another_role_is_named(engine: Engine) -> None:
    case_id = expense(engine, 2000)
    engine.fire(case_id, "submit", actor="alice")
    engine.fire(case_id, "approve", actor="dual")  # counts as manager
    edit_record(engine, case_id, 3, role="finance")
    seq, problem = finding(engine.verify(case_id))
    assert seq == 3
    assert "acted as finance, the rules give manager" in problem


def test_a_step_given_to_someone_else_is_named(engine: Engine) -> None:
    case_id = expense(engine)
    engine.fire(case_id, "submit", actor="alice")
    edit_record(engine, case_id, 2, actor="bob")
    seq, problem = finding(engine.verify(case_id))
    assert seq == 2
    assert "bob may not fire `submit`" in problem


def test_an_assignee_the_load_did_not_pick_is_named(engine: Engine) -> None:
    case_id = expense(engine)
    assignee = engine.fire(case_id, "submit", actor="alice").case.assignee
    detail = dict(engine.history(case_id)[1].detail)
    assert detail["assignee"] == assignee
    edit_record(engine, case_id, 2, detail={**detail, "assignee": "fay"})
    with engine.store.engine.begin() as conn:
        conn.execute(text(f"UPDATE cases SET assignee = 'fay' WHERE id = {case_id}"))
    seq, problem = finding(engine.verify(case_id))
    assert seq == 2
    assert "`assignee` is not the one the rules give" in problem


# -- delegations --------------------------------------------------------------------------------------


def test_a_delegation_cut_short_after_use_is_named(engine: Engine, clock: Clock) -> None:
    grant = engine.delegate("mia", "bob", actor="mia", ends_at=clock() + timedelta(days=2))
    case_id = expense(engine)
    engine.fire(case_id, "submit", actor="alice")
    clock.advance(hours=1)
    record = engine.fire(case_id, "send_back", actor="bob").record
    assert (record.role, record.on_behalf_of) == ("manager", "mia")
    assert engine.verify(case_id).ok
    # A revocation dated before the step: bob then acted for nobody.
    assert engine.store.delegation_log()[0].id == grant.id
    run_sql(engine, f"UPDATE delegations SET ends_at = starts_at WHERE id = {grant.id}")
    report = engine.verify(case_id)
    seq, problem = finding(report, case_id)
    assert seq == 3
    assert "bob may not fire `send_back`" in problem
    assert [(f.subject, f.problem) for f in report.findings if f.case_id is None] == [
        (f"delegation {grant.id}", "it ends before it starts")
    ]


def test_steps_taken_under_an_older_org_still_verify(engine: Engine, clock: Clock, tmp_path: object) -> None:
    import shutil
    from pathlib import Path

    case_id = expense(engine, 2000)
    engine.fire(case_id, "submit", actor="alice")
    engine.fire(case_id, "approve", actor="dual")
    # dual loses the finance role in a new org: the vote taken before still verifies, under the old one.
    folder = Path(str(tmp_path)) / "defs"
    shutil.copytree(MINI, folder)
    org = folder / "org.yaml"
    org.write_text(org.read_text().replace("roles: [manager, finance]", "roles: [manager]"))
    clock.advance(minutes=5)
    assert engine.deploy([folder]).org_changed
    clock.advance(minutes=5)
    engine.fire(case_id, "approve", actor="fay")
    assert engine.verify().ok


# -- timers -------------------------------------------------------------------------------------------


def submitted_with_timers(engine: Engine) -> int:
    """A case in manager review: its deadline (pay within 2 days) and the state's timeout run."""
    case_id = expense(engine)
    engine.fire(case_id, "submit", actor="alice")
    assert engine.verify(case_id).ok
    return case_id


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        ("DELETE FROM timers WHERE kind = 'deadline'", "deadline `pay-within-2d` due "),
        ("UPDATE timers SET due_at = due_at + INTERVAL '10 days'", "(it was moved)"),
        ("UPDATE timers SET pending = false WHERE kind = 'timeout'", "the timeout of `manager_review`"),
    ],
)
def test_a_timer_removed_or_moved_is_named(engine: Engine, statement: str, words: str) -> None:
    case_id = submitted_with_timers(engine)
    if engine.store.dialect == "sqlite":
        statement = statement.replace("due_at + INTERVAL '10 days'", "datetime(due_at, '+10 days')")
        statement = statement.replace("false", "0")
    with engine.store.engine.begin() as conn:
        conn.execute(text(f"{statement} AND case_id = {case_id}" if "WHERE" in statement else
                          f"{statement} WHERE case_id = {case_id}"))  # fmt: skip
    seq, problem = finding(engine.verify(case_id))
    assert seq == 2
    assert words in problem


def test_breaches_and_escalations_replay_and_a_hidden_breach_is_named(engine: Engine, clock: Clock) -> None:
    from sopflow.engine.worker import Worker

    case_id = submitted_with_timers(engine)
    worker = Worker(engine)
    clock.advance(days=2, hours=2)  # past the deadline and its first two rungs (notify, reassign)
    worker.tick(deliver=False)
    worker.tick(deliver=False)
    events = [r.event for r in engine.history(case_id)]
    assert "deadline_breached" in events and "reassign" in events
    assert engine.verify(case_id).ok
    with engine.store.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE timers SET outcome = 'late' WHERE outcome = 'breached' AND case_id = {case_id}")
        )
    _seq, problem = finding(engine.verify(case_id))
    assert "the deadlines standing breached are none, its records give ['pay-within-2d']" in problem


def test_a_timer_added_to_force_a_step_is_named(engine: Engine, clock: Clock) -> None:
    from sopflow.engine.worker import Worker

    case_id = submitted_with_timers(engine)
    # An escalation rung that fires `send_back` at once, without any breach.
    with engine.store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO timers (case_id, kind, name, rung, due_at, pending, entered_seq) "
                "VALUES (:case_id, 'escalation', 'pay-within-2d', 3, :due, :pending, 2)"
            ),
            {"case_id": case_id, "due": clock(), "pending": True},
        )
    Worker(engine).tick(deliver=False)
    assert engine.case(case_id).state == "draft"
    seq, problem = finding(engine.verify(case_id))
    assert seq == 3
    assert "rung 3 of `pay-within-2d`, which its records never started" in problem


# -- idempotency keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        ("UPDATE idempotency_keys SET actor = 'bob' WHERE key = 'f-1'", "`f-1` says bob used it to fire"),
        (
            "UPDATE idempotency_keys SET seq = 1 WHERE key = 'f-1'",
            "`f-1` says alice used it to fire `submit`",
        ),
        (
            "INSERT INTO idempotency_keys (key, operation, actor, target, case_id, seq, created_at) "
            "SELECT 'planted', 'fire', 'mia', 'send_back', case_id, 2, created_at FROM idempotency_keys "
            "WHERE key = 'f-1'",
            "`planted` says mia used it to fire `send_back`; the record says alice did `submit`",
        ),
    ],
)
def test_an_idempotency_key_pointed_elsewhere_is_named(engine: Engine, statement: str, words: str) -> None:
    case_id = engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice", key="s-1").case.id
    engine.fire(case_id, "submit", actor="alice", key="f-1")
    assert engine.verify(case_id).ok
    with engine.store.engine.begin() as conn:
        conn.execute(text(statement))
    _seq, problem = finding(engine.verify(case_id))
    assert words in problem


def test_a_grant_written_straight_into_the_table_is_named(engine: Engine, clock: Clock) -> None:
    case_id = expense(engine)
    engine.fire(case_id, "submit", actor="alice")
    # The table is append-only, so an INSERT passes its triggers: bob hands himself mia's roles.
    with engine.store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO delegations (kind, delegator, delegate, roles, starts_at, ends_at, created_by, "
                "created_at) VALUES ('grant', 'mia', 'bob', '[]', :start, :end, 'bob', :start)"
            ),
            {"start": clock(), "end": clock() + timedelta(days=1)},
        )
    clock.advance(minutes=1)
    assert engine.fire(case_id, "send_back", actor="bob").record.on_behalf_of == "mia"
    report = engine.verify()
    assert [(f.subject, f.problem) for f in report.findings] == [
        ("delegation 1", "bob granted it, who is neither mia nor an administrator")
    ]


# -- the command line ---------------------------------------------------------------------------------


def _tamper(sop: Engine, case_id: int, what: str) -> None:
    row = sop.store.definition("expense", 1)
    assert row is not None
    if what == "definition":
        # REPLACE on a database without the triggers: the row deleted and written again, with new text.
        values = {"text": row.source_text.replace("manager, finance", "manager"), "at": row.deployed_at}
        replace = (
            "INSERT OR REPLACE INTO definitions (definition_id, version, content_hash, source_text, file, "
            f"deployed_at) VALUES ('expense', 1, '{row.content_hash}', :text, '{row.file}', :at)"
        )
        if sop.store.dialect == "sqlite":
            run_sql(sop, replace, params=values)
        else:
            run_sql(sop, "DELETE FROM definitions", replace.replace("OR REPLACE ", ""), params=values)
    elif what == "org":
        run_sql(sop, "UPDATE orgs SET source_text = REPLACE(source_text, 'roles: [employee], department', "
                "'roles: [employee, finance], department')")  # fmt: skip
    elif what == "vote":
        edit_record(sop, case_id, 3, actor="bob")
    else:
        column, value = what.split("=")
        with sop.store.engine.begin() as conn:
            conn.execute(text(f"UPDATE cases SET {column} = {value} WHERE id = {case_id}"))


@pytest.mark.parametrize(
    ("what", "named"),
    [
        ("definition", "definition expense@1: its source text hashes to"),
        ("org", "org mini-co (deployment 1): its source text hashes to"),
        ("starter='bob'", "record 3: the case's starter is `bob`, its records give `alice`"),
        ("submitter='mia'", "record 3: the case's submitter is `mia`, its records give `alice`"),
        ("assignee='fay'", "record 3: the case's assignee is `fay`, its records give none"),
        ("version=9", "record 3: the case's version is `9`, its records give `3`"),
        ("vote", "record 3: it was not allowed: bob may not vote"),
    ],
)
def test_the_cli_exits_1_naming_each_tamper(database_url: str, what: str, named: str) -> None:
    from click.testing import CliRunner

    from sopflow.cli.main import cli

    def verify() -> tuple[int, str]:
        env = {"SOPFLOW_DB": None, "SOPFLOW_USER": None}
        result = CliRunner().invoke(cli, ["--db", database_url, "audit", "verify", "--all"], env=env)
        assert "Traceback" not in result.output
        return result.exit_code, result.stderr

    with Engine(database_url) as sop:
        sop.deploy([MINI])
        case_id = expense(sop, 2000)
        sop.fire(case_id, "submit", actor="alice")
        sop.fire(case_id, "approve", actor="mia")
        assert verify() == (0, "")
        _tamper(sop, case_id, what)
    code, err = verify()
    assert code == 1, err
    assert named.replace("record 3", f"case {case_id}, record 3") in err
