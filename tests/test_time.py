"""Deadlines, escalation ladders, timeouts and the outbox, with a fake clock, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, WebhookChannel, Worker
from tests.conftest import MINI, Clock, engine_on


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def submitted(engine: Engine) -> int:
    case_id = engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice").case.id
    engine.fire(case_id, "submit", actor="alice")
    return case_id


def worker(engine: Engine, lines: list[str] | None = None) -> Worker:
    sink = lines if lines is not None else []
    return Worker(engine, channels=[ConsoleChannel(write=sink.append)])


def events(engine: Engine, case_id: int) -> list[str]:
    return [r.event for r in engine.history(case_id)]


def test_deadline_is_breached_at_its_time_and_not_a_minute_before(engine: Engine, clock: Clock) -> None:
    case_id = submitted(engine)
    lines: list[str] = []
    w = worker(engine, lines)
    clock.advance(days=2, minutes=-1)
    assert w.tick().total == 0
    assert engine.overdue() == []
    clock.advance(minutes=1)
    report = w.tick()
    assert report.fired == {"deadline": 1, "escalation": 1}
    assert events(engine, case_id)[-2:] == ["deadline_breached", "escalate"]
    (overdue,) = engine.overdue()
    assert (overdue.case_id, overdue.name) == (case_id, "pay-within-2d")
    assert report.delivered == 1
    assert lines and "overdue" in lines[0] and f"case {case_id}" in lines[0]
    assert engine.deadlines(case_id)[0].left(clock.now) <= 0
    assert engine.verify(case_id).ok


def test_escalation_ladder_notifies_then_reassigns_then_fires(engine: Engine, clock: Clock) -> None:
    case_id = submitted(engine)
    w = worker(engine)
    clock.advance(days=2)
    w.tick()
    before = engine.case(case_id).assignee
    clock.advance(hours=1)
    assert w.tick().fired == {"escalation": 1}
    last = engine.history(case_id)[-1]
    assert last.event == "reassign" and last.actor == "$system"
    assert last.detail["from"] == before
    clock.advance(hours=2)
    assert w.tick().fired == {"escalation": 1}
    case = engine.case(case_id)
    assert case.state == "draft"
    assert engine.history(case_id)[-1].event == "send_back"
    assert engine.verify(case_id).ok


def test_reaching_the_end_in_time_cancels_the_deadline(engine: Engine, clock: Clock) -> None:
    case_id = submitted(engine)
    clock.advance(days=1)
    assignee = engine.case(case_id).assignee
    assert assignee is not None
    engine.fire(case_id, "approve_claim", actor=assignee, payload={"note": "ok"})
    clock.advance(days=10)
    assert worker(engine).tick().total == 0
    outcomes = dict(((k, n), o) for k, n, _, o in engine.store.timer_outcomes(case_id))
    assert outcomes[("deadline", "pay-within-2d")] == "cancelled"
    assert outcomes[("timeout", "timeout:manager_review")] == "cancelled"


def test_a_state_timeout_fires_its_event_once(engine: Engine, clock: Clock) -> None:
    case_id = submitted(engine)
    engine.fire(case_id, "send_back", actor="mia")
    engine.fire(case_id, "submit", actor="alice")
    w = worker(engine)
    clock.advance(days=5)
    report = w.tick()
    assert report.fired.get("timeout") == 1
    assert engine.case(case_id).state == "draft"
    timeouts = [r for r in engine.history(case_id) if r.actor == "$system" and r.event == "send_back"]
    assert len(timeouts) == 1
    assert w.tick().total == 0


def test_a_late_case_leaves_the_overdue_list_when_its_span_ends(engine: Engine, clock: Clock) -> None:
    case_id = submitted(engine)
    clock.advance(days=2, minutes=30)
    worker(engine).tick()
    assert [o.case_id for o in engine.overdue()] == [case_id]
    assignee = engine.case(case_id).assignee
    assert assignee is not None
    engine.fire(case_id, "approve_claim", actor=assignee, payload={"note": "late"})
    assert engine.overdue() == []


def test_two_workers_never_fire_a_timer_twice(engine: Engine, clock: Clock) -> None:
    ids = [submitted(engine) for _ in range(20)]
    clock.advance(days=2)
    a, b = worker(engine), worker(engine)
    threads = [threading.Thread(target=w.tick, kwargs={"deliver": False}) for w in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for case_id in ids:
        assert events(engine, case_id).count("deadline_breached") == 1
        assert events(engine, case_id).count("escalate") == 1


def test_an_expired_lease_lets_another_worker_fire_the_timer(engine: Engine, clock: Clock) -> None:
    case_id = submitted(engine)
    clock.advance(days=2)
    dead = worker(engine)
    claimed = engine.store.claim_timers(clock.now, dead.name, dead.lease, 10)
    assert len(claimed) == 1
    other = worker(engine)
    assert other.tick().total == 0
    clock.advance(seconds=61)
    assert other.tick().fired.get("deadline") == 1
    assert events(engine, case_id).count("deadline_breached") == 1


class _Flaky(BaseHTTPRequestHandler):
    failures_left = 2
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Flaky.failures_left > 0:
            _Flaky.failures_left -= 1
            self.send_response(503)
        else:
            _Flaky.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_is_retried_with_backoff_until_delivered(engine: Engine, clock: Clock) -> None:
    _Flaky.failures_left = 2
    _Flaky.received = []
    server = HTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        w = Worker(engine, channels=[WebhookChannel(url, timeout=5)])
        case_id = submitted(engine)
        clock.advance(days=2)
        assert w.tick().failed_deliveries == 1
        assert w.tick().failed_deliveries == 0
        clock.advance(seconds=5)
        assert w.tick().failed_deliveries == 1
        clock.advance(seconds=10)
        assert w.tick().delivered == 1
        (note,) = engine.store.notification_log(case_id)
        assert note["attempts"] == 3 and note["delivered_at"] is not None
        attempts = engine.store.deliveries(note["id"])
        assert [ok for _, ok, _ in attempts] == [False, False, True]
        assert len(_Flaky.received) == 1 and b"overdue" in _Flaky.received[0]
    finally:
        server.shutdown()
        server.server_close()


def test_working_time_deadline_skips_nights_weekends_and_holidays() -> None:
    from datetime import UTC, datetime

    from sopflow.engine.calendar import add_working_time
    from sopflow.engine.definition.model import WorkingCalendar

    cal = WorkingCalendar(
        timezone="Asia/Shanghai",
        working_hours=((540, 720), (780, 1080)),
        holidays=("2026-10-01",),
        extra_working_days=("2026-10-10",),
    )
    friday_5pm = datetime(2026, 3, 6, 17, 0, tzinfo=UTC) - timedelta(hours=8)
    due = add_working_time(friday_5pm, 4 * 3600, cal)
    assert due.astimezone(cal_zone(cal)) == datetime(2026, 3, 9, 12, 0, tzinfo=cal_zone(cal))
    before_holiday = datetime(2026, 9, 30, 17, 0, tzinfo=cal_zone(cal))
    assert add_working_time(before_holiday, 2 * 3600, cal).astimezone(cal_zone(cal)) == datetime(
        2026, 10, 2, 10, 0, tzinfo=cal_zone(cal)
    )
    saturday_swap = datetime(2026, 10, 10, 8, 0, tzinfo=cal_zone(cal))
    assert add_working_time(saturday_swap, 3600, cal).astimezone(cal_zone(cal)).day == 10


def cal_zone(cal: object) -> object:
    from zoneinfo import ZoneInfo

    return ZoneInfo(cal.timezone)  # type: ignore[attr-defined]


def test_closing_a_case_ends_every_deadline_even_if_until_does_not_name_it(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "defs"
    shutil.copytree(MINI, folder)
    path = folder / "expense.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("until: [paid, cancelled]", "until: [paid]"),
        encoding="utf-8",
    )
    with Engine(database_url, clock=clock) as sop:
        sop.deploy([folder])
        case_id = submitted(sop)
        sop.fire(case_id, "send_back", actor="mia")
        sop.fire(case_id, "cancel", actor="alice")
        clock.advance(days=3)
        assert worker(sop).tick().total == 0
        assert sop.overdue() == []


SEEDS = Path(__file__).resolve().parent.parent / "definitions"
PIECE = {"title": "春季活动预告", "origin": "original"}
SUBMIT = {"material_url": "https://cms.example.com/m/1", "channel": "官网"}


@pytest.fixture
def seeded(database_url: str, clock: Clock) -> Iterator[Engine]:
    sop = Engine(database_url, clock=clock)
    sop.deploy([SEEDS])
    yield sop
    sop.close()


def submitted_piece(engine: Engine) -> int:
    case_id = engine.start("content-review", PIECE, actor="li.na").case.id
    engine.fire(case_id, "submit", actor="li.na", payload=SUBMIT)
    return case_id


def test_content_review_4h_limit_breaches_at_4h_not_at_3h59m(seeded: Engine, clock: Clock) -> None:
    case_id = submitted_piece(seeded)
    lines: list[str] = []
    w = worker(seeded, lines)
    clock.advance(hours=3, minutes=59)
    assert w.tick().total == 0
    assert lines == []
    clock.advance(minutes=1)
    report = w.tick()
    assert report.fired == {"deadline": 1, "escalation": 1}
    escalation = seeded.history(case_id)[-1]
    assert (escalation.event, escalation.detail["action"], escalation.detail["target"]) == (
        "escalate",
        "notify",
        "operations_manager",
    )
    assert lines and "[notify operations_manager]" in lines[0]
    assert [o.case_id for o in seeded.overdue()] == [case_id]


def test_content_published_in_time_cancels_the_4h_limit(seeded: Engine, clock: Clock) -> None:
    case_id = submitted_piece(seeded)
    steps = [
        ("wang.fang", "claim", {}),
        ("wang.fang", "pass_screening", {"topic_compliant": True, "typo_free": True}),
        ("chen.jing", "pass_review", {"copyright_status": "original", "comment": "原创"}),
        ("li.na", "tag", {"category": "education"}),
        (
            "chen.jing",
            "publish",
            {"layout_confirmed": True, "links_valid": True, "published_url": "https://x/1"},
        ),
    ]
    for user, event, payload in steps:
        clock.advance(minutes=30)
        seeded.fire(case_id, event, actor=user, payload=payload)
    assert seeded.case(case_id).state == "published"
    clock.advance(hours=10)
    assert worker(seeded).tick().total == 0
    assert seeded.overdue() == []
    assert ("deadline", "publish-within-4h", 0, "cancelled") in seeded.store.timer_outcomes(case_id)


RESPAN = """\
id: respan
version: 1
title: {zh: 重新计时, en: Span started again}
data: {type: object}
initial: draft
states:
  draft:
    title: {zh: 草稿, en: Draft}
    owner: employee
    on:
      submit: {to: review, by: [$starter]}
  review:
    title: {zh: 审核, en: Review}
    owner: manager
    on:
      redo: {to: recheck, by: [manager]}
      done: {to: closed, by: [manager]}
  recheck:
    title: {zh: 复核, en: Recheck}
    choice:
      - {else: review}
  closed:
    title: {zh: 完成, en: Closed}
    final: true
deadlines:
  - name: answer
    title: {zh: 一小时内答复, en: Answer within an hour}
    from: review
    until: [recheck, closed]
    within: 1h
"""


def test_a_step_that_ends_a_span_and_starts_it_again_restarts_its_clock(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    folder = tmp_path / "respan"
    folder.mkdir()
    (folder / "org.yaml").write_text((MINI / "org.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "respan.yaml").write_text(RESPAN, encoding="utf-8")
    for engine in engine_on(database_url, clock, folder):
        case_id = engine.start("respan", {}, actor="alice").case.id
        engine.fire(case_id, "submit", actor="alice")
        assert [d.due_at for d in engine.deadlines(case_id)] == [clock.now + timedelta(hours=1)]
        clock.advance(minutes=30)
        # One step leaves the span (recheck ends it) and enters its first state again (review starts it).
        engine.fire(case_id, "redo", actor="mia")
        assert [d.due_at for d in engine.deadlines(case_id)] == [clock.now + timedelta(hours=1)]
        engine.fire(case_id, "done", actor="mia")
        assert engine.deadlines(case_id) == []
