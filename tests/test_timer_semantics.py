"""The timer semantics a definition states, on SQLite and PostgreSQL: a deadline keeps its first clock when
its span is entered again (`restart: never`, the default) or starts again (`restart: on_reentry`); an
escalation rung counts in its deadline's calendar, from the breach or (`from: start`) from the span's
start; a timeout may notify as well as fire. Every case passes `audit verify` afterwards, so the replay
counts timers the way the runtime does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, Worker
from tests.conftest import ROOT, Clock, engine_on

TIMING = ROOT / "tests" / "fixtures" / "timing"


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    # Thursday 5 March 2026, 16:00 in Beijing: two working hours are left that day.
    clock.now = datetime(2026, 3, 5, 8, 0, tzinfo=UTC)
    yield from engine_on(database_url, clock, TIMING)


def deadlines(engine: Engine, case_id: int) -> dict[str, datetime]:
    return {d.name: d.due_at for d in engine.deadlines(case_id)}


def submitted(engine: Engine) -> int:
    case_id = engine.start("review", {"title": "t"}, actor="ann").case.id
    engine.fire(case_id, "submit", actor="ann")
    return case_id


def test_reentering_the_span_keeps_the_first_clock_unless_the_deadline_restarts(
    engine: Engine, clock: Clock
) -> None:
    t0 = clock.now
    case_id = submitted(engine)
    clock.advance(hours=1)
    engine.fire(case_id, "send_back", actor="lin")
    clock.advance(hours=1)
    engine.fire(case_id, "submit", actor="ann")
    due = deadlines(engine, case_id)
    assert due["kept"] == t0 + timedelta(hours=4)
    assert due["restarted"] == t0 + timedelta(hours=2, minutes=0) + timedelta(hours=4)
    assert engine.verify(case_id).ok


def test_a_restart_after_a_breach_closes_the_breach_and_runs_a_new_clock(
    engine: Engine, clock: Clock
) -> None:
    t0 = clock.now
    case_id = submitted(engine)
    worker = Worker(engine, channels=[ConsoleChannel(write=lambda _line: None)])
    clock.advance(hours=4)
    worker.tick()
    assert {o.name for o in engine.overdue() if o.case_id == case_id} >= {"kept", "restarted"}
    engine.fire(case_id, "send_back", actor="lin")
    clock.advance(minutes=30)
    engine.fire(case_id, "submit", actor="ann")
    overdue = {o.name for o in engine.overdue() if o.case_id == case_id}
    assert "kept" in overdue
    assert "restarted" not in overdue
    assert deadlines(engine, case_id)["restarted"] == t0 + timedelta(hours=4, minutes=30) + timedelta(hours=4)
    outcomes = [(name, outcome) for _kind, name, _rung, outcome in engine.store.timer_outcomes(case_id)]
    assert ("restarted", "late") in outcomes
    assert engine.verify(case_id).ok


def test_rungs_count_working_time_from_the_breach_or_from_the_start(engine: Engine, clock: Clock) -> None:
    case_id = submitted(engine)
    worker = Worker(engine, channels=[ConsoleChannel(write=lambda _line: None)])
    # The 2 working hours end at 18:00 Beijing on Thursday (10:00 UTC).
    assert deadlines(engine, case_id)["working"] == datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
    clock.now = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
    worker.tick()
    rungs = {t.rung: t.due_at for t in engine.store.pending_timers(case_id) if t.kind == "escalation"}
    # Rung 1, an hour after the breach in working time: Friday 10:00 Beijing, not Thursday 19:00.
    assert rungs[1] == datetime(2026, 3, 6, 2, 0, tzinfo=UTC)
    # Rung 2, 24 working hours from the span's start (Thursday 16:00): Thu 2, Fri 8, Mon 8 and Tuesday
    # 09:00-12:00 and 13:00-16:00, so Tuesday 16:00 Beijing.
    assert rungs[2] == datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
    clock.now = rungs[2]
    assert worker.tick().fired["escalation"] == 2
    assert engine.verify(case_id).ok


def test_a_timeout_notifies_as_well_as_fires(engine: Engine, clock: Clock) -> None:
    case_id = submitted(engine)
    engine.fire(case_id, "hold", actor="lin")
    lines: list[str] = []
    worker = Worker(engine, channels=[ConsoleChannel(write=lines.append)])
    clock.advance(hours=2)
    report = worker.tick()
    assert report.fired["timeout"] == 1
    assert engine.case(case_id).state == "published"
    told = sorted(line.split("]")[0] for line in lines)
    assert told == ["[notify dai", "[notify lead"]
    assert all("fired `give_up`" in line for line in lines)
    assert engine.verify(case_id).ok


def test_release_go_no_go_a_24h_rung_written_as_24h_and_clock_only_reject_and_resume(
    engine: Engine, clock: Clock
) -> None:
    from sopflow.engine.errors import NotPermitted

    t0 = clock.now
    case_id = engine.start("release", {"version": "2.4.0"}, actor="lin").case.id
    lines: list[str] = []
    worker = Worker(engine, channels=[ConsoleChannel(write=lines.append)])
    # Only the clock rejects an undecided release, or resumes a postponed one.
    with pytest.raises(NotPermitted):
        engine.fire(case_id, "auto_reject", actor="lin")
    clock.advance(hours=1)
    engine.fire(case_id, "postpone", actor="lin")
    with pytest.raises(NotPermitted):
        engine.fire(case_id, "resume", actor="lin")
    clock.now = t0 + timedelta(hours=2)
    assert worker.tick().fired == {"deadline": 1, "escalation": 1}
    rung = next(t for t in engine.store.pending_timers(case_id) if t.kind == "escalation")
    # The director's rung counts 24 h from the request, not from the breach two hours in.
    assert rung.due_at == t0 + timedelta(hours=24)
    clock.now = t0 + timedelta(hours=24)
    assert worker.tick().fired == {"escalation": 1}
    assert any(line.startswith("[notify director]") for line in lines)
    clock.now = t0 + timedelta(hours=25)
    assert worker.tick().fired == {"timeout": 1}
    assert engine.case(case_id).state == "deciding"
    clock.now = t0 + timedelta(hours=27)
    assert worker.tick().fired == {"timeout": 1}
    assert engine.case(case_id).state == "rejected"
    assert [r.event for r in engine.history(case_id)][-1] == "auto_reject"
    assert sum("fired `auto_reject`" in line for line in lines) == 1
    assert engine.verify(case_id).ok


def test_a_breach_recorded_before_rungs_counted_working_time_still_verifies(
    engine: Engine, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trails written before rungs counted the deadline's calendar: the breach names no span start and its
    rungs count clock time from the breach. `audit verify` replays such a breach that way."""
    import sopflow.engine.worker as worker_module

    def legacy_rung_due(deadline: Any, rung: Any, breached_due: datetime, *_: Any) -> datetime:
        return breached_due + timedelta(seconds=rung.after_seconds)

    original: Any = Worker._record

    def legacy_record(self: Worker, *args: Any) -> Any:
        *head, detail = args
        if head[3] == "deadline_breached":
            detail = {k: v for k, v in detail.items() if k != "span_started_at"}
        return original(self, *head, detail)

    monkeypatch.setattr(worker_module, "rung_due", legacy_rung_due)
    monkeypatch.setattr(Worker, "_record", legacy_record)
    case_id = submitted(engine)
    worker = Worker(engine, channels=[ConsoleChannel(write=lambda _line: None)])
    clock.now = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)  # the working deadline's breach, 18:00 Beijing
    worker.tick()
    rungs = {t.rung: t.due_at for t in engine.store.pending_timers(case_id) if t.kind == "escalation"}
    assert rungs[1] == datetime(2026, 3, 5, 11, 0, tzinfo=UTC)  # clock time, as before
    assert engine.verify(case_id).ok
