"""Races and crashes, with real processes, on SQLite and PostgreSQL.

- 8 processes fire the same event on one case at once: exactly one succeeds, the audit trail gains
  exactly one record, the others are told why (a conflict or an event no longer possible).
- A process is killed with SIGKILL at random moments while it fires, 50 times: the database passes its
  integrity check, the whole audit trail verifies, and no case is half-moved.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sopflow.engine.runtime import Engine

ROOT = Path(__file__).resolve().parent.parent
MINI = Path(__file__).parent / "fixtures" / "mini"


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
@pytest.mark.parametrize("expect_version", [True, False], ids=["expect-version", "no-version"])
def test_eight_writers_one_winner(database_url: str, tmp_path: Path, expect_version: bool) -> None:
    engine = Engine(database_url)
    engine.deploy([MINI])
    case_id = engine.start("expense", {"amount": 10, "purpose": "race"}, actor="alice").case.id
    before = len(engine.history(case_id))
    go = tmp_path / "go"
    workers = [
        _spawn(
            "tests.helpers.race_worker",
            database_url,
            str(case_id),
            "submit",
            "alice",
            "1" if expect_version else "-",
            str(go),
        )
        for _ in range(8)
    ]
    for w in workers:
        assert w.stdout is not None
        assert w.stdout.readline().strip() == "ready", w.stderr.read() if w.stderr else ""
    go.touch()
    results = [w.communicate(timeout=120)[0].strip() for w in workers]
    assert results.count("ok") == 1, results
    losers = {r for r in results if r != "ok"}
    assert losers <= ({"conflict"} if expect_version else {"not-available", "conflict"}), results
    history = engine.history(case_id)
    assert len(history) == before + 1
    assert engine.case(case_id).version == 2
    assert engine.verify().ok
    engine.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_corrupts_nothing(database_url: str) -> None:
    rng = random.Random(20261124)
    kills = 50
    for _ in range(kills):
        worker = _spawn("tests.helpers.crash_worker", database_url, str(MINI))
        assert worker.stdout is not None
        line = worker.stdout.readline().strip()
        assert line == "ready", worker.stderr.read() if worker.stderr else line
        time.sleep(rng.uniform(0.0, 0.15))
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
        assert worker.returncode == -signal.SIGKILL
    engine = Engine(database_url)
    if database_url.startswith("sqlite"):
        from sqlalchemy import text

        with engine.store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    report = engine.verify()
    assert report.ok, report.findings
    assert report.cases > kills / 2
    for case_id in engine.store.iter_case_ids():
        case = engine.case(case_id)
        last = engine.history(case_id)[-1]
        assert case.state == last.to_state
        assert case.version == sum(1 for r in engine.history(case_id) if r.outcome == "accepted")
    engine.close()


@pytest.mark.slow
def test_five_committee_members_vote_at_once_and_the_case_moves_once(
    database_url: str, tmp_path: Path
) -> None:
    engine = Engine(database_url)
    engine.deploy([MINI])
    case_id = engine.start("board-vote", {"motion": "adopt the new SOP"}, actor="alice").case.id
    members = list(engine.org().members("board"))
    assert len(members) == 5
    go = tmp_path / "go"
    workers = [
        _spawn("tests.helpers.race_worker", database_url, str(case_id), "approve", member, "-", str(go))
        for member in members
    ]
    for w in workers:
        assert w.stdout is not None
        assert w.stdout.readline().strip() == "ready", w.stderr.read() if w.stderr else ""
    go.touch()
    results = [w.communicate(timeout=120)[0].strip() for w in workers]
    assert results == ["ok"] * 5
    history = engine.history(case_id)
    votes = [r for r in history if r.event == "approve" and r.outcome == "accepted"]
    assert sorted(r.actor for r in votes) == sorted(members)
    moves = [r for r in history if r.from_state == "voting" and r.to_state == "carried"]
    assert len(moves) == 1
    assert engine.case(case_id).state == "carried"
    assert engine.verify().ok
    engine.close()


@pytest.mark.slow
@pytest.mark.parametrize("count", [2000])
def test_timers_fire_exactly_once_while_workers_are_killed(database_url: str, count: int) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, select

    from sopflow.engine.store.tables import audit, timers

    workers_wanted = 4 if database_url.startswith("postgresql") else 2
    past = datetime.now(UTC) - timedelta(hours=1)
    setup = Engine(database_url, clock=lambda: past)
    setup.deploy([ROOT / "tests" / "fixtures" / "ping"])
    for n in range(count):
        setup.start("ping", {"n": n}, actor="alice")
    setup.close()
    rng = random.Random(7)
    running = [_spawn("tests.helpers.timer_worker", database_url, "1") for _ in range(workers_wanted)]
    kills = 0
    deadline = time.monotonic() + 600
    engine = Engine(database_url)
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 0.4))
            alive = [w for w in running if w.poll() is None]
            if not alive and engine.store.next_due() is None:
                break
            if alive and kills < 40:
                victim = rng.choice(alive)
                victim.send_signal(signal.SIGKILL)
                victim.communicate(timeout=30)
                kills += 1
                running.remove(victim)
            while sum(1 for w in running if w.poll() is None) < workers_wanted and engine.store.next_due():
                running.append(_spawn("tests.helpers.timer_worker", database_url, "1"))
    finally:
        for w in running:
            if w.poll() is None:
                w.kill()
            w.communicate(timeout=30)
    assert kills > 0
    with engine.store.engine.connect() as conn:
        breaches = dict(
            conn.execute(
                select(audit.c.case_id, func.count())
                .where(audit.c.event == "deadline_breached")
                .group_by(audit.c.case_id)
            ).all()
        )
        pending = conn.execute(
            select(func.count()).select_from(timers).where(timers.c.pending.is_(True))
        ).scalar()
    assert pending == 0
    assert len(breaches) == count
    assert set(breaches.values()) == {1}
    assert engine.verify().ok
    engine.close()
