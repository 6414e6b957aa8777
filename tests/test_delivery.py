"""Exactly-once delivery records: a notification's lease is taken on the clock when it is claimed, only the
holder of the lease records the attempt, and a worker that lost its lease to another one skips the
notification and logs it instead of dying on the delivery log's key. On SQLite and PostgreSQL.

The race the tests stage by hand: worker A claims, its channel is slow, A's lease runs out, worker B
claims the same notification and records it; then A comes back to record its own attempt.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from sopflow.engine.runtime import Engine
from sopflow.engine.store import NotificationRow
from sopflow.engine.worker import WebhookChannel, Worker
from tests.conftest import MINI, ROOT, Clock, engine_on


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


@dataclass
class Hook:
    """A channel named like the webhook that runs `during` in the middle of each delivery."""

    during: Callable[[NotificationRow], None] = lambda _n: None
    name: str = "webhook"
    delivered: list[int] = field(default_factory=list)

    def deliver(self, notification: NotificationRow) -> str:
        self.during(notification)
        self.delivered.append(notification.id)
        return f"delivered by {id(self)}"


def overdue_notifications(engine: Engine, clock: Clock, cases: int = 1) -> dict[int, int]:
    """Cases of the mini expense claim whose deadline is breached: each escalation leaves one webhook
    notification in the outbox, undelivered. Returns their ids, each with its case's."""
    ids = []
    for n in range(cases):
        case_id = engine.start("expense", {"amount": 100 + n, "purpose": "taxi"}, actor="alice").case.id
        engine.fire(case_id, "submit", actor="alice")
        ids.append(case_id)
    clock.advance(days=2)
    Worker(engine, channels=[Hook()]).tick(deliver=False)
    found = {note["id"]: case_id for case_id in ids for note in engine.store.notification_log(case_id)}
    assert len(found) == cases
    return found


def test_a_worker_whose_lease_ran_out_skips_what_another_delivered(engine: Engine, clock: Clock) -> None:
    (note,) = overdue_notifications(engine, clock)
    b_hook = Hook()
    b = Worker(engine, name="b", lease=timedelta(seconds=10), channels=[b_hook])

    def slow(_n: NotificationRow) -> None:
        clock.advance(seconds=11)  # A's lease runs out while its channel works
        assert b.tick().delivered == 1

    a = Worker(engine, name="a", lease=timedelta(seconds=10), channels=[Hook(during=slow)])
    report = a.tick()
    assert (report.delivered, report.lost_claims) == (0, 1)
    assert b_hook.delivered == [note]
    attempts = engine.store.deliveries(note)
    assert [(attempt, ok) for attempt, ok, _ in attempts] == [(1, True)]
    assert attempts[0][2] == f"delivered by {id(b_hook)}"
    assert a.tick().delivered == 0 and b.tick().delivered == 0


def test_a_long_tick_hands_out_leases_from_the_clock_not_from_its_start(engine: Engine, clock: Clock) -> None:
    # As `tick --now DUE --lease 1 & sleep 0.8; tick --now DUE+30s --lease 1`: the second tick must not
    # take what the first holds for another 0.2 s, whatever time each fires things for.
    notes = overdue_notifications(engine, clock, cases=2)
    due = clock.now
    second: list[int] = []

    def overlap(_n: NotificationRow) -> None:
        if second:
            return
        clock.advance(seconds=0.8)
        other = Worker(engine, name="second", lease=timedelta(seconds=1), channels=[Hook()])
        second.append(other.tick(due + timedelta(seconds=30)).delivered)

    first = Worker(engine, name="first", lease=timedelta(seconds=1), channels=[Hook(during=overlap)])
    report = first.tick(due)
    assert second == [0]
    assert (report.delivered, report.lost_claims) == (2, 0)
    for note in notes:
        assert [ok for _, ok, _ in engine.store.deliveries(note)] == [True]


def test_a_delivery_is_recorded_at_the_moment_it_ended(engine: Engine, clock: Clock) -> None:
    ((_note, case_id),) = overdue_notifications(engine, clock).items()
    started = clock.now
    Worker(engine, channels=[Hook(during=lambda _n: clock.advance(seconds=42))]).tick()
    (row,) = engine.store.notification_log(case_id)
    assert row["delivered_at"] == started + timedelta(seconds=42)


def test_leases_are_handed_back_when_a_worker_stops(engine: Engine, clock: Clock) -> None:
    overdue_notifications(engine, clock)
    case_id = engine.start("expense", {"amount": 5, "purpose": "bus"}, actor="alice").case.id
    engine.fire(case_id, "submit", actor="alice")
    clock.advance(days=2)
    held = Worker(engine, name="held")
    assert engine.store.claim_timers(clock.now, held.name, held.lease, 10)
    assert engine.store.claim_notifications(clock.now, held.name, held.lease, 10)
    other = Worker(engine, name="other", channels=[Hook()])
    assert other.tick(deliver=False).total == 0 and other.deliver().delivered == 0
    stop = threading.Event()
    stop.set()
    held.run(stop)  # stops at once, and hands its leases back on the way out
    assert other.tick(deliver=False).fired.get("deadline") == 1
    assert other.deliver().delivered >= 1


class _Slow(BaseHTTPRequestHandler):
    """A webhook receiver that answers after up to `delay` seconds and counts what it received."""

    delay: ClassVar[float] = 0.3
    received: ClassVar[Counter[int]] = Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(random.uniform(0, _Slow.delay))
        with _Slow.lock:
            _Slow.received[int(body["id"])] += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_webhook() -> Iterator[str]:
    _Slow.received = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_many_workers_with_short_leases_and_a_slow_webhook_record_each_delivery_once(
    database_url: str, slow_webhook: str
) -> None:
    past = Clock()
    past.now = datetime.now(UTC) - timedelta(days=3)
    setup = Engine(database_url, clock=past)
    try:
        setup.deploy([MINI])
        notes = set(overdue_notifications(setup, past, cases=40))
    finally:
        setup.close()
    engine = Engine(database_url)
    failures: list[BaseException] = []
    lost = Counter[str]()

    def work(n: int) -> None:
        hook = WebhookChannel(slow_webhook)
        w = Worker(engine, name=f"w{n}", lease=timedelta(seconds=0.2), batch=5, channels=[hook])
        try:
            for _ in range(400):
                lost[w.name] += w.deliver().lost_claims
                if not engine.store.undelivered():
                    return
        except BaseException as exc:  # a worker that dies is what this test looks for
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert failures == []
        assert engine.store.undelivered() == 0
        for note in notes:
            assert [ok for _, ok, _ in engine.store.deliveries(note)] == [True], note
        assert set(_Slow.received) == notes
        # The race was run: some leases ran out under the slow webhook and were taken over.
        assert sum(lost.values()) > 0
    finally:
        engine.close()


@pytest.mark.slow
def test_two_overlapping_ticks_with_short_leases_both_succeed(
    database_url: str, slow_webhook: str, tmp_path: Path
) -> None:
    # The report's reproduction, with the CLI: `tick --now DUE --lease 1 & sleep 0.8; tick --now DUE+30s`.
    _Slow.delay = 1.5
    past = Clock()
    past.now = datetime.now(UTC) - timedelta(days=3)
    setup = Engine(database_url, clock=past)
    try:
        setup.deploy([MINI])
        notes = set(overdue_notifications(setup, past, cases=4))
    finally:
        setup.close()
    due = datetime.now(UTC)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOPFLOW_DB": database_url}
    sopflow = str(Path(sys.executable).parent / "sopflow")

    def tick(now: datetime) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sopflow, "tick", "--now", now.isoformat(), "--lease", "1", "--webhook", slow_webhook],
            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    try:
        first = tick(due)
        time.sleep(0.8)
        second = tick(due + timedelta(seconds=30))
        outs = [p.communicate(timeout=120) for p in (first, second)]
    finally:
        _Slow.delay = 0.3
    for p, (_out, err) in zip((first, second), outs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err and "internal error" not in err
    check = Engine(database_url)
    try:
        assert check.store.undelivered() == 0
        for note in notes:
            assert [ok for _, ok, _ in check.store.deliveries(note)] == [True]
    finally:
        check.close()
