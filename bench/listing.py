"""Benchmark: reading a big database. Listing one state's oldest 50 cases, one person's open cases, and
a worker's tick when nothing is due, among 100,000 cases (1,000,000 with --million), on SQLite.

    .venv/bin/python bench/listing.py             # 100,000 cases (about 10 s)
    .venv/bin/python bench/listing.py --quick     # 30,000 cases
    .venv/bin/python bench/listing.py --million   # 1,000,000 cases (about 4 minutes)

SETUP, not measured: the mini definition and org are deployed through the engine, then the cases (and
one pending timer per open case, due in the future) are bulk-inserted straight into the store's tables
with SQLAlchemy Core, far faster than starting them one by one. Cases are spread over the states draft
20 %, manager_review 40 %, joint 10 %, paid 20 %, cancelled 10 %; manager_review cases are assigned in
turn to mia, max and dual; the 10 joint cases among the 100 newest are assigned to fay, who has no other case.

Measured (median of many runs each, ratio = engine / baseline, both measured here):
- `Engine.cases(state="manager_review", limit=50)` vs the same indexed SELECT with the sqlite3 module,
  twice: the rows as the driver hands them over (tuples of text and numbers), and the rows turned into
  the values the engine hands back (a dict per row: data parsed from JSON, `open` a bool, the three
  times aware UTC datetimes); then the engine's resident memory before and after paging through every
  case of that state.
- `Engine.cases(assignee=..., open=True, limit=50)` (the query behind a task list) for mia (a third of
  manager_review) and for fay (10 cases, the newest), each vs listing one state.
- `Engine.tasks(...)` for mia and fay, with the EXPLAIN QUERY PLAN of every statement it sends.
- `Worker.tick()` with nothing due among the pending timers vs the same tick on an empty database, with
  the EXPLAIN QUERY PLAN of every statement the tick runs.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _harness import compare, header, median_ms, note, rss_mib, seed_engine, temp_dir
from sqlalchemy import event, insert

from sopflow.engine.runtime import Engine
from sopflow.engine.store.tables import cases, timers
from sopflow.engine.worker import Worker

STATES = (("draft", 20), ("manager_review", 40), ("joint", 10), ("paid", 20), ("cancelled", 10))
MANAGERS = ("mia", "max", "dual")
RARE = "fay"
START = datetime(2025, 1, 1, tzinfo=UTC)
COLUMNS = (
    "id, definition_id, definition_version, state, open, data, version, starter, assignee, submitter, "
    "entered_seq, entered_at, created_at, updated_at, audit_seq, last_hash, start_key"
)


def state_of(i: int) -> str:
    slot = i % 100
    for state, share in STATES:
        if slot < share:
            return state
        slot -= share
    raise AssertionError


def _assignee(state: str, i: int, count: int) -> str | None:
    if state == "manager_review":
        return MANAGERS[i % 3]
    if state == "joint" and i >= count - 100:
        return RARE  # the newest joint cases: 10 in the last 100
    return None


def case_rows(count: int, batch: int) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Batches of (case rows, timer rows), ids 1..count, oldest first."""
    cases_out: list[dict[str, Any]] = []
    timers_out: list[dict[str, Any]] = []
    for i in range(count):
        state = state_of(i)
        at = START + timedelta(seconds=i)
        final = state in ("paid", "cancelled")
        cases_out.append(
            {
                "id": i + 1,
                "definition_id": "expense",
                "definition_version": 1,
                "state": state,
                "open": not final,
                "data": f'{{"amount":{100 + i % 900},"purpose":"claim {i}"}}',
                "version": 3,
                "starter": "alice" if i % 2 else "bob",
                "assignee": _assignee(state, i, count),
                "submitter": "alice",
                "entered_seq": 2,
                "entered_at": at,
                "created_at": at,
                "updated_at": at,
                "audit_seq": 2,
                "last_hash": "0" * 64,
                "start_key": None,
            }
        )
        if not final:
            # Far in the future, so that nothing is due: a worker's tick must find that out cheaply.
            timers_out.append(
                {
                    "case_id": i + 1,
                    "kind": "deadline",
                    "name": "pay-within-2d",
                    "rung": 0,
                    "due_at": datetime(2100, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
                    "pending": True,
                    "entered_seq": 2,
                }
            )
        if len(cases_out) == batch:
            yield cases_out, timers_out
            cases_out, timers_out = [], []
    if cases_out:
        yield cases_out, timers_out


def fill(engine: Engine, count: int) -> float:
    """SETUP: bulk-insert `count` cases and their timers; seconds taken."""
    start = time.perf_counter()
    with engine.store.engine.begin() as conn:
        for case_batch, timer_batch in case_rows(count, 20_000):
            conn.execute(insert(cases), case_batch)
            if timer_batch:
                conn.execute(insert(timers), timer_batch)
    return time.perf_counter() - start


class Statements:
    """Collects the SQL an engine sends while active (to EXPLAIN it afterwards): SQLite's trace callback
    on every connection the engine takes from its pool, so that statements sent through SQLAlchemy and
    those the store sends to the driver directly are both seen, with their values filled in."""

    def __init__(self, engine: Engine) -> None:
        self.sa = engine.store.engine
        self.seen: list[tuple[str, Any]] = []

    def _trace(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.set_trace_callback(lambda statement: self.seen.append((statement, ())))

    @staticmethod
    def _untrace(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.set_trace_callback(None)

    def __enter__(self) -> Statements:
        event.listen(self.sa, "checkout", self._trace)
        event.listen(self.sa, "checkin", self._untrace)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.sa, "checkout", self._trace)
        event.remove(self.sa, "checkin", self._untrace)


def explain(path: Path, statements: list[tuple[str, Any]]) -> None:
    conn = sqlite3.connect(path)
    for statement, parameters in statements:
        if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
            continue
        note("  " + " ".join(statement.split()))
        for row in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters):
            note(f"      plan: {row[-1]}")
    conn.close()


def plain_listing(path: Path, state: str, *, convert: bool = False) -> Callable[[], object]:
    """The same SELECT with the sqlite3 module. Without `convert`, the rows as fetched (tuples; data still
    JSON text, times still text). With `convert`, each row also made into the values the engine hands
    back, written as tightly as the engine's own conversion: a dict per row, data parsed with
    `json.loads`, `open` a bool, the three times parsed as aware UTC datetimes."""
    conn = sqlite3.connect(path)
    query = f"SELECT {COLUMNS} FROM cases WHERE state = ? ORDER BY created_at, id LIMIT 50"
    names = [name.strip() for name in COLUMNS.split(",")]

    def run() -> object:
        rows = conn.execute(query, (state,)).fetchall()
        assert len(rows) == 50
        if not convert:
            return rows
        out = []
        for row in rows:
            item = dict(zip(names, row, strict=True))
            item["open"] = bool(item["open"])
            item["data"] = json.loads(item["data"])
            for name in ("entered_at", "created_at", "updated_at"):
                item[name] = datetime.fromisoformat(item[name] + "+00:00")
            out.append(item)
        return out

    return run


def listing(engine: Engine, path: Path, rounds: int) -> float:
    header("listing one state's oldest 50: Engine.cases(state=..., limit=50)")
    ours = median_ms(lambda: engine.cases(state="manager_review", limit=50), rounds)
    bare = median_ms(plain_listing(path, "manager_review"), rounds)
    same = median_ms(plain_listing(path, "manager_review", convert=True), rounds)
    for what, base in (("same values", same), ("rows as fetched", bare)):
        label = f"plain sqlite3, same SELECT, {what}"
        compare("Engine.cases", ours * 1000, "µs", label, base * 1000, target=2.0, at_least=False)
    with Statements(engine) as seen:
        engine.cases(state="manager_review", limit=50)
    explain(path, seen.seen)
    return ours


def memory(engine: Engine) -> None:
    header("memory while paging through every case of one state, 50 at a time")
    before = rss_mib()
    pages = listed = 0
    after_id: int | None = None
    while True:
        page = engine.cases(state="manager_review", limit=50, after_id=after_id)
        if not page:
            break
        pages += 1
        listed += len(page)
        after_id = page[-1].id
    after = rss_mib()
    compare("RSS after paging", after, "MiB", "RSS before", before, target=1.05, at_least=False)
    note(f"{listed:,} cases listed in {pages:,} pages; growth {after - before:+.1f} MiB")


def tasks(engine: Engine, path: Path, rounds: int, state_ms: float) -> None:
    for user, what in (("mia", "a third of manager_review"), (RARE, "10 cases, the newest")):
        header(f"one person's open cases: Engine.cases(assignee={user!r}, open=True, limit=50), {what}")
        found = len(engine.cases(assignee=user, open=True, limit=50))
        ours = median_ms(lambda u=user: engine.cases(assignee=u, open=True, limit=50), max(rounds // 10, 5))
        label = f"assignee query ({found} found)"
        compare(label, ours * 1000, "µs", "listing one state (above)", state_ms * 1000)
        with Statements(engine) as seen:
            engine.cases(assignee=user, open=True, limit=50)
        explain(path, seen.seen)
    for user in ("mia", RARE):
        header(f"one person's task list: Engine.tasks({user!r})")
        found = len(engine.tasks(user))
        full = median_ms(lambda u=user: engine.tasks(u), 11)
        note(f"Engine.tasks({user!r}): {found} tasks, {full:,.1f} ms (median of 11)")
        with Statements(engine) as seen:
            engine.tasks(user)
        explain(path, seen.seen)


def tick(engine: Engine, path: Path, rounds: int, empty: Engine) -> None:
    header("Worker.tick() when nothing is due")
    pending = engine.store.next_due()
    worker = Worker(engine, name="bench")
    idle = Worker(empty, name="bench")
    worker.tick()
    idle.tick()
    ours = median_ms(worker.tick, rounds)
    theirs = median_ms(idle.tick, rounds)
    compare("tick, pending timers in the database", ours, "ms", "tick on an empty database", theirs)
    note(f"the next timer is due {pending:%Y-%m-%d}; nothing fired: {worker.tick().total == 0}")
    with Statements(engine) as seen:
        worker.tick()
    explain(path, seen.seen)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="30,000 cases")
    parser.add_argument("--million", action="store_true", help="1,000,000 cases")
    parser.add_argument("--cases", type=int, help="any number of cases")
    args = parser.parse_args()
    count = args.cases or (1_000_000 if args.million else 30_000 if args.quick else 100_000)
    rounds = 50 if args.quick else 200
    with temp_dir() as folder:
        path = folder / "big.db"
        engine = seed_engine(f"sqlite:///{path}")
        empty = seed_engine(f"sqlite:///{folder / 'empty.db'}")
        header(f"SETUP (not measured): {count:,} cases bulk-inserted into the store's tables")
        seconds = fill(engine, count)
        note(f"inserted in {seconds:.1f} s; database file {path.stat().st_size / 2**20:,.0f} MiB")
        state_ms = listing(engine, path, rounds)
        memory(engine)
        tasks(engine, path, rounds, state_ms)
        tick(engine, path, rounds, empty)
        engine.close()
        empty.close()
    note(f"(noise: five medians of one fixed computation differed by up to {_spread()}% during this run)")


def _spread() -> int:
    """A rough figure for the docs: how much two medians of the same thing differed on this machine."""
    samples = [median_ms(lambda: sum(range(20_000)), 21) for _ in range(5)]
    return round((max(samples) - min(samples)) / statistics.median(samples) * 100)


if __name__ == "__main__":
    main()
