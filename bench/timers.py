"""Benchmark: timers fired per second by 1 and by 4 worker processes sharing one PostgreSQL database.

    .venv/bin/python bench/timers.py            # 4,000 due timers per run (about 40 s)
    .venv/bin/python bench/timers.py --quick    # 1,500

SETUP, not measured: for each run a fresh database with the mini definition deployed, then N cases
bulk-inserted straight into the store's tables in `manager_review`, each with its state timeout (which
fires `send_back`) already due. The throwaway cluster keeps PostgreSQL's durable defaults (fsync on).

Measured: the wall time from the moment the workers are released until the last one has nothing left;
each worker process runs `Worker.tick()` (lease a batch of due timers with FOR UPDATE SKIP LOCKED, fire
each in its own transaction, repeat). Every timer must fire exactly once: the counts are checked.
Ratio = 4 workers / 1 worker (timers per second).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from datetime import timedelta
from typing import Any

from _harness import busy_since, compare, cpu_times, header, new_database, note, postgres, seed_engine
from sqlalchemy import func, insert, select

from sopflow.engine.audit import GENESIS
from sopflow.engine.runtime import Engine
from sopflow.engine.simulate import utc_now
from sopflow.engine.store.tables import cases, timers
from sopflow.engine.worker import Worker


def fill(url: str, count: int) -> None:
    """SETUP: `count` cases waiting in manager_review, each with its timeout due an hour ago."""
    engine = seed_engine(url)
    now = utc_now()
    due = now - timedelta(hours=1)
    with engine.store.engine.begin() as conn:
        ids = conn.execute(
            insert(cases).returning(cases.c.id),
            [
                {
                    "definition_id": "expense",
                    "definition_version": 1,
                    "state": "manager_review",
                    "open": True,
                    "data": f'{{"amount":{100 + i % 400},"purpose":"claim {i}"}}',
                    "version": 1,
                    "starter": "alice",
                    "assignee": ("mia", "max")[i % 2],
                    "submitter": "alice",
                    "entered_seq": 1,
                    "entered_at": due,
                    "created_at": due,
                    "updated_at": due,
                    "audit_seq": 0,
                    "last_hash": GENESIS,
                    "start_key": None,
                }
                for i in range(count)
            ],
        ).scalars()
        conn.execute(
            insert(timers),
            [
                {
                    "case_id": case_id,
                    "kind": "timeout",
                    "name": "timeout:manager_review",
                    "rung": 0,
                    "due_at": due,
                    "pending": True,
                    "entered_seq": 1,
                }
                for case_id in ids
            ],
        )
    engine.close()


def _work(url: str, ready: Any, go: Any, results: Any) -> None:
    engine = Engine(url)
    worker = Worker(engine, batch=100)
    engine.org()  # warm: the org and the definition are loaded before the clock starts
    engine.compiled("expense", 1)
    ready.wait()
    go.wait()
    report = worker.tick()
    results.put((time.perf_counter(), report.fired.get("timeout", 0), report.stale))
    engine.close()


def run(url: str, processes: int) -> tuple[float, int, int, float]:
    """(seconds, fired, stale, busy) for `processes` workers draining the due timers of `url`."""
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(processes + 1)
    go = context.Barrier(processes + 1)
    results = context.Queue()
    workers = [context.Process(target=_work, args=(url, ready, go, results)) for _ in range(processes)]
    for w in workers:
        w.start()
    ready.wait()
    before = cpu_times()
    start = time.perf_counter()
    go.wait()
    outcomes = [results.get(timeout=600) for _ in workers]
    busy = busy_since(before)
    for w in workers:
        w.join()
    end = max(t for t, _, _ in outcomes)
    return end - start, sum(f for _, f, _ in outcomes), sum(s for _, _, s in outcomes), busy


def pending(url: str) -> int:
    engine = Engine(url)
    with engine.store.engine.connect() as conn:
        left = conn.execute(
            select(func.count()).select_from(timers).where(timers.c.pending.is_(True))
        ).scalar()
    engine.close()
    return int(left or 0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,500 due timers per run")
    parser.add_argument("--timers", type=int, help="due timers per run")
    args = parser.parse_args()
    count = args.timers or (1_500 if args.quick else 4_000)
    header(f"PostgreSQL (fsync on): {count:,} due state timeouts, drained by 1 and by 4 worker processes")
    with postgres(durable=True) as server:
        if server is None:
            return
        rates: dict[int, float] = {}
        for processes in (1, 4):
            url = new_database(server)
            fill(url, count)
            seconds, fired, stale, busy = run(url, processes)
            left = pending(url)
            rates[processes] = fired / seconds
            note(
                f"{processes} worker(s): {fired:,} fired in {seconds:.1f} s, {stale} stale, {left} left "
                "pending; "
                f"cores busy {busy:.0%}"
            )
            if fired != count or left:
                note(f"!! expected {count:,} fired and none left: the exactly-once check FAILED")
        compare("4 workers", rates[4], "timers/s", "1 worker", rates[1])
        note(f"this machine has {multiprocessing.cpu_count()} cores")


if __name__ == "__main__":
    main()
