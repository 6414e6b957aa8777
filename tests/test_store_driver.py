"""The store's hot statements, sent to the driver directly (engine/store/driver.py): what a step hands back
is what a re-read finds, times and JSON read the same as through SQLAlchemy, a step sends few statements,
and every hot statement is an index search on SQLite."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from sopflow.engine.errors import NotPermitted
from sopflow.engine.runtime import Engine
from sopflow.engine.store import CaseQuery, TimerSpec
from sopflow.engine.store.driver import Sql, decode_json, when
from sopflow.engine.store.tables import cases, timers
from tests.conftest import MINI, Clock, engine_on

EAST = timezone(timedelta(hours=8))


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def test_what_a_step_returns_is_what_a_re_read_finds(engine: Engine, clock: Clock) -> None:
    # A clock outside UTC: the row a step builds must hold the same UTC times the database gives back.
    clock.now = clock.now.astimezone(EAST)
    started = engine.start("expense", {"purpose": "taxi", "amount": 100}, actor="alice")
    case_id = started.case.id
    assert started.case == engine.case(case_id)
    steps = [
        ("submit", "alice", None),  # moves through a choice, enters a state, assigns, starts timers
        ("send_back", "mia", None),  # leaves a state with a timeout
        ("cancel", "bob", NotPermitted),  # refused: only the chain moves
    ]
    for event, actor, refused in steps:
        clock.advance(minutes=7, microseconds=3)
        before = engine.store.case(case_id)
        if refused is None:
            result = engine.fire(case_id, event, actor=actor)
            assert result.case == engine.case(case_id)
        else:
            with pytest.raises(refused):
                engine.fire(case_id, event, actor=actor)
        after = engine.store.case(case_id)
        assert after.audit_seq == before.audit_seq + 1
    reassigned = engine.reassign(case_id, "bob", actor="root")  # a change that enters no state
    assert reassigned.case == engine.case(case_id)
    assert engine.verify(case_id).ok


def test_the_store_row_of_a_step_equals_the_stored_row(engine: Engine, clock: Clock) -> None:
    clock.now = clock.now.astimezone(EAST)
    case_id = engine.start("expense", {"purpose": "taxi", "amount": 100}, actor="alice").case.id
    seen = []
    original = engine.store.fire

    def spy(*args: object, **kwargs: object) -> object:
        fired = original(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(fired.case)
        return fired

    engine.store.fire = spy  # type: ignore[method-assign]
    engine.fire(case_id, "submit", actor="alice")
    assert seen[-1] == engine.store.case(case_id)
    assert seen[-1].updated_at.tzinfo is UTC


def test_times_and_json_read_the_same_as_through_sqlalchemy(engine: Engine) -> None:
    sql = Sql.of(engine.store.dialect)
    moment = datetime(2026, 5, 1, 8, 30, 0, tzinfo=UTC)  # no microseconds: the text must still carry them
    with engine.store.engine.begin() as conn:
        conn.execute(
            insert(timers).values(
                case_id=1, kind="deadline", name="x", rung=0, due_at=moment, pending=True, entered_seq=1
            )
        )
        stored = conn.execute(select(timers.c.due_at).where(timers.c.name == "x")).scalar_one()
        raw = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            sql.text("SELECT due_at FROM timers WHERE name = ? AND due_at = ?"), ("x", sql.time(moment))
        ).fetchone()
    assert raw is not None, "the driver's time parameter must match what SQLAlchemy stored"
    assert when(raw[0]) == stored == moment
    assert when(raw[0]).tzinfo is UTC
    assert decode_json('{"a":[1,2.5,"é"]}') == {"a": [1, 2.5, "é"]}
    assert decode_json(' {"a": 1} ') == {"a": 1}
    with pytest.raises(ValueError):
        decode_json('{"a":1}junk')
    with pytest.raises(ValueError, match="aware"):
        sql.time(datetime(2026, 1, 1))


def test_listing_filters_pages_and_orders_like_before(engine: Engine, clock: Clock) -> None:
    ids = []
    for amount in (10, 20, 30):
        clock.advance(minutes=1)
        ids.append(engine.start("expense", {"purpose": "p", "amount": amount}, actor="alice").case.id)
    assert [c.id for c in engine.cases(limit=2)] == ids[:2]
    assert [c.id for c in engine.cases(newest_first=True, limit=2)] == ids[::-1][:2]
    assert [c.id for c in engine.cases(after_id=ids[0])] == ids[1:]
    assert [c.id for c in engine.cases(data={"amount": 20})] == [ids[1]]
    assert [c.id for c in engine.cases(created_before=clock.now)] == ids[:2]
    both = engine.store.cases_each(
        [CaseQuery(state="draft", limit=1), CaseQuery(state="draft", newest_first=True, limit=1)]
    )
    assert [r.id for r in both] == [ids[0], ids[-1]]


# -- SQLite: statements and plans ------------------------------------------------------------------------


@pytest.fixture
def on_sqlite(tmp_path: Path, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(f"sqlite:///{tmp_path / 'plans.db'}", clock, MINI)


def _traced(engine: Engine) -> list[str]:
    """Every statement SQLite runs for `engine` from now on (its pool connections, values filled in)."""
    from sqlalchemy import event

    seen: list[str] = []

    @event.listens_for(engine.store.engine, "checkout")
    def _trace(dbapi_connection: sqlite3.Connection, *_args: object) -> None:
        dbapi_connection.set_trace_callback(seen.append)

    # The store keeps its write connection checked out between steps: hand it back, so that the next
    # step checks it out again, traced.
    engine.store._writer.close()
    return seen


def test_a_step_sends_about_as_many_statements_as_the_bare_transaction(on_sqlite: Engine) -> None:
    case_id = on_sqlite.start("expense", {"purpose": "taxi", "amount": 100}, actor="alice").case.id
    seen = _traced(on_sqlite)
    on_sqlite.fire(case_id, "submit", actor="alice")
    submit = list(seen)
    seen.clear()
    on_sqlite.fire(case_id, "send_back", actor="mia")
    # BEGIN, the case (with the org's hash and the delegation check), [the least-loaded count],
    # UPDATE, the audit INSERT, the timers' INSERT or UPDATE, the idempotency key's INSERT, COMMIT. (A
    # trigger's run is traced as its statement again: counted once.)
    assert len(_once(submit)) == 8, submit
    assert len(_once(seen)) == 7, seen


def _once(statements: list[str]) -> list[str]:
    return [s for n, s in enumerate(statements) if n == 0 or statements[n - 1] != s]


def _plans(path: Path, statements: list[str]) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [
            str(row[-1])
            for statement in statements
            if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT"))
            for row in conn.execute("EXPLAIN QUERY PLAN " + statement)
        ]
    finally:
        conn.close()


def test_the_hot_statements_are_index_searches(on_sqlite: Engine, tmp_path: Path) -> None:
    with on_sqlite.store.engine.begin() as conn:  # enough rows that a scan would be a choice
        conn.execute(
            insert(cases),
            [
                {
                    "definition_id": "expense", "definition_version": 1, "state": "manager_review",
                    "open": True, "data": "{}", "version": 1, "starter": "alice", "assignee": "mia",
                    "submitter": "alice", "entered_seq": 1, "entered_at": datetime(2025, 1, 1, tzinfo=UTC),
                    "created_at": datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
                    "updated_at": datetime(2025, 1, 1, tzinfo=UTC), "audit_seq": 1, "last_hash": "0" * 64,
                }
                for i in range(300)
            ],
        )  # fmt: skip
    case_id = on_sqlite.start("expense", {"purpose": "taxi", "amount": 100}, actor="alice").case.id
    seen = _traced(on_sqlite)
    on_sqlite.fire(case_id, "submit", actor="alice")
    on_sqlite.fire(case_id, "send_back", actor="mia")
    on_sqlite.fire(case_id, "cancel", actor="alice")  # ends the deadline's span: cancels by name
    on_sqlite.cases(assignee="mia", open=True)
    on_sqlite.tasks("mia")
    sql = Sql.of("sqlite")
    extra = [sql.start_timers(case_id, 9, [TimerSpec("deadline", "d", 0, datetime.now(UTC))])]
    plans = _plans(tmp_path / "plans.db", seen + [_expanded(text, params) for text, params in extra])
    # No statement reads a whole table of cases, timers or audit records (`SCAN c` would be the step's
    # read of the case; `SCAN orgs` reads the newest org by rowid, one row).
    scans = [p for p in plans if re.match(r"SCAN (cases|timers|audit|c)\b", p)]
    assert scans == [], plans
    assert any("ix_cases_assignee (assignee=? AND open=?)" in p for p in plans), plans
    assert any("ix_timers_case (case_id=? AND pending=? AND outcome=?)" in p for p in plans), plans


def _expanded(text: str, params: list[object]) -> str:
    """`text` with its `?` markers replaced by SQL literals (for EXPLAIN)."""
    parts = text.split("?")
    out = parts[0]
    for value, part in zip(params, parts[1:], strict=True):
        literal = str(int(value)) if isinstance(value, bool | int) else "'" + str(value) + "'"
        out += literal + part
    return out
