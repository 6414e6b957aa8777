"""Benchmark: durable transitions per second, the engine against the same transaction written by hand.

    .venv/bin/python bench/durable.py            # SQLite, PostgreSQL, 8 writers vs 1 (about a minute)
    .venv/bin/python bench/durable.py --quick    # smaller counts (run_all)
    .venv/bin/python bench/durable.py --no-postgres

The engine fires the mini definition's loop `submit` (draft → route → manager_review) and `send_back`
(manager_review → draft) on one case, as alice and mia, through `Engine.fire`. The baseline is the
transaction every durable step needs at the least, written with the plain driver on the same schema:
BEGIN (IMMEDIATE on SQLite); SELECT the case row; UPDATE it WHERE id AND version match; INSERT an audit
row sealed with a SHA-256 over canonical JSON; COMMIT. It has no rules, no guards, no timers, no
assignment and no idempotency: the ratio is what all of that, plus SQLAlchemy, costs.

The two sides take turns (five rounds each, alternating), so that other load on the machine falls on
both alike. Both sides run with the same durability: SQLite in WAL mode with synchronous=FULL (the engine's
default), PostgreSQL with fsync and synchronous_commit on (its defaults). Ratio = engine / baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from _harness import (
    busy_since,
    compare,
    cpu_times,
    header,
    new_database,
    note,
    plain_url,
    postgres,
    seed_engine,
    temp_dir,
)

from sopflow.engine.runtime import Engine

LOOP = (("submit", "alice"), ("send_back", "mia"))
"""(event, actor) fired in turn: draft → route → manager_review → draft → …"""

AUDIT_COLUMNS = (
    "case_id", "seq", "at", "actor", "role", "on_behalf_of", "event", "from_state", "to_state", "outcome",
    "payload", "data_change", "comment", "reason", "detail", "definition_hash", "prev_hash", "hash",
)  # fmt: skip
CASE_COLUMNS = (
    "id, definition_id, definition_version, state, open, data, version, starter, assignee, submitter, "
    "entered_seq, entered_at, created_at, updated_at, audit_seq, last_hash, start_key"
)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# -- the engine --------------------------------------------------------------------------------------


def start_case(engine: Engine) -> int:
    return engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice").case.id


def engine_fires(engine: Engine, case_id: int, count: int) -> float:
    """Fire `count` events of the loop on one case; fires per second."""
    for event, actor in LOOP * 10:  # warm up: compile, caches, prepared statements
        engine.fire(case_id, event, actor=actor)
    start = time.perf_counter()
    for i in range(count):
        event, actor = LOOP[i % 2]
        engine.fire(case_id, event, actor=actor)
    return count / (time.perf_counter() - start)


def statements_per_fire(engine: Engine, case_id: int) -> float:
    """How many SQL statements (BEGIN on SQLite and COMMIT included) one fire sends, counted over a few
    fires at the doors they leave by: the store's calls of the driver (`engine.store.driver.run`, as
    `engine.store.store` uses it), the step transaction's BEGIN and COMMIT, and SQLAlchemy's cursor
    event for anything sent through Core; on PostgreSQL, plus the BEGIN psycopg sends by itself before a
    transaction's first statement (one per fire), so that both databases count round trips alike."""
    from sqlalchemy import event

    import sopflow.engine.store.store as store_module
    from sopflow.engine.store.database import StepTransaction

    seen: list[str] = []

    def count(*_args: Any) -> None:
        seen.append("x")

    driver_run = store_module.run
    driver_call = StepTransaction._call

    def counted_run(*args: Any) -> Any:
        seen.append("x")
        return driver_run(*args)

    def counted_call(self: StepTransaction, *args: Any) -> None:
        seen.append("x")
        driver_call(self, *args)

    sa_engine = engine.store.engine
    event.listen(sa_engine, "before_cursor_execute", count)
    event.listen(sa_engine, "commit", count)  # a step that ran a Core statement commits through SQLAlchemy
    store_module.run = counted_run
    StepTransaction._call = counted_call  # type: ignore[method-assign]
    try:
        for ev, actor in LOOP * 5:
            engine.fire(case_id, ev, actor=actor)
    finally:
        store_module.run = driver_run
        StepTransaction._call = driver_call  # type: ignore[method-assign]
        event.remove(sa_engine, "before_cursor_execute", count)
        event.remove(sa_engine, "commit", count)
    psycopg_begin = 1 if engine.store.dialect == "postgresql" else 0
    return len(seen) / 10 + psycopg_begin


# -- the baseline -------------------------------------------------------------------------------------


def decide(row: dict[str, Any], now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hand-written step: the next state of the loop, the sealed audit record."""
    back = row["state"] == "manager_review"
    to_state, event, actor = ("draft", "send_back", "mia") if back else ("manager_review", "submit", "alice")
    record: dict[str, Any] = {
        "case_id": row["id"],
        "seq": row["audit_seq"] + 1,
        "at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": actor,
        "role": "manager" if back else "$starter",
        "on_behalf_of": None,
        "event": event,
        "from_state": row["state"],
        "to_state": to_state,
        "outcome": "accepted",
        "payload": {},
        "data_change": {},
        "comment": None,
        "reason": None,
        "detail": {},
        "definition_hash": "d" * 64,
        "prev_hash": row["last_hash"],
    }
    record["hash"] = hashlib.sha256(canonical(record).encode("utf-8")).hexdigest()
    change = {
        "state": to_state,
        "open": True,
        "data": canonical(json.loads(row["data"])),
        "assignee": None if back else "mia",
        "submitter": actor,
    }
    return change, record


def audit_values(record: dict[str, Any]) -> list[Any]:
    values = dict(record)
    for name in ("payload", "data_change", "detail"):
        values[name] = canonical(values[name])
    return [values[c] for c in AUDIT_COLUMNS]


def sqlite_baseline(path: str, case_id: int, count: int) -> float:
    """The minimal durable step with the sqlite3 module, WAL + synchronous=FULL; steps per second."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    update = (
        "UPDATE cases SET state = ?, open = ?, data = ?, assignee = ?, submitter = ?, version = version + 1, "
        "updated_at = ?, entered_seq = ?, entered_at = ?, audit_seq = ?, last_hash = ? "
        "WHERE id = ? AND version = ?"
    )
    insert = f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})"

    def step() -> None:
        conn.execute("BEGIN IMMEDIATE")
        row = dict(conn.execute(f"SELECT {CASE_COLUMNS} FROM cases WHERE id = ?", (case_id,)).fetchone())
        now = datetime.now(UTC)
        change, record = decide(row, now)
        stamp = now.replace(tzinfo=None).isoformat(" ")
        done = conn.execute(
            update,
            (change["state"], change["open"], change["data"], change["assignee"], change["submitter"], stamp,
             record["seq"], stamp, record["seq"], record["hash"], case_id, row["version"]),
        )  # fmt: skip
        assert done.rowcount == 1
        conn.execute(insert, audit_values(record))
        conn.execute("COMMIT")

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(count):
        step()
    rate = count / (time.perf_counter() - start)
    conn.close()
    return rate


def postgres_baseline(url: str, case_id: int, count: int) -> float:
    """The minimal durable step with psycopg (prepared statements, as psycopg does by default)."""
    import psycopg
    from psycopg.rows import dict_row

    conn = psycopg.connect(plain_url(url), row_factory=dict_row)
    update = (
        "UPDATE cases SET state = %s, open = %s, data = %s, assignee = %s, submitter = %s, "
        "version = version + 1, updated_at = %s, entered_seq = %s, entered_at = %s, audit_seq = %s, "
        "last_hash = %s WHERE id = %s AND version = %s"
    )
    marks = ", ".join(["%s"] * len(AUDIT_COLUMNS))
    insert = f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) VALUES ({marks})"

    def step() -> None:
        with conn.transaction():
            row = conn.execute(f"SELECT {CASE_COLUMNS} FROM cases WHERE id = %s", (case_id,)).fetchone()
            assert row is not None
            now = datetime.now(UTC)
            change, record = decide(row, now)
            stamp = now.replace(tzinfo=None)
            done = conn.execute(
                update,
                (change["state"], change["open"], change["data"], change["assignee"], change["submitter"],
                 stamp, record["seq"], stamp, record["seq"], record["hash"], case_id, row["version"]),
            )  # fmt: skip
            assert done.rowcount == 1
            conn.execute(insert, audit_values(record))

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(count):
        step()
    rate = count / (time.perf_counter() - start)
    conn.close()
    return rate


# -- the runs -----------------------------------------------------------------------------------------

ROUNDS = 5


def interleaved(
    ours: Callable[[int], float], theirs: Callable[[int], float], count: int
) -> tuple[float, float]:
    """Both sides in ROUNDS alternating turns of count/ROUNDS steps each, so that load coming and going
    on a shared machine falls on both alike; steps per second of each over all its turns."""
    per = max(1, count // ROUNDS)
    ours_s = theirs_s = 0.0
    for _ in range(ROUNDS):
        ours_s += per / ours(per)
        theirs_s += per / theirs(per)
    return per * ROUNDS / ours_s, per * ROUNDS / theirs_s


def on_sqlite(count: int) -> None:
    header(f"SQLite, WAL + synchronous=FULL: {count:,} steps on one case")
    with temp_dir() as folder:
        engine = seed_engine(f"sqlite:///{folder / 'engine.db'}")
        case_id = start_case(engine)
        # The baseline runs on a database with the same schema and indexes and a case started the same way.
        other = seed_engine(f"sqlite:///{folder / 'plain.db'}")
        plain_case = start_case(other)
        other.close()
        ours, theirs = interleaved(
            lambda n: engine_fires(engine, case_id, n),
            lambda n: sqlite_baseline(str(folder / "plain.db"), plain_case, n),
            count,
        )
        per_fire = statements_per_fire(engine, case_id)
        engine.close()
    compare("Engine.fire", ours, "steps/s", "plain sqlite3, same transaction", theirs, target=0.6)
    note(f"SQL statements per engine fire (BEGIN/COMMIT included): {per_fire:.1f}; baseline: 5")


def on_postgres(server: str, count: int) -> None:
    header(f"PostgreSQL (fsync on): {count:,} steps on one case")
    url = new_database(server)
    engine = seed_engine(url)
    case_id = start_case(engine)
    plain_case = start_case(engine)
    ours, theirs = interleaved(
        lambda n: engine_fires(engine, case_id, n), lambda n: postgres_baseline(url, plain_case, n), count
    )
    per_fire = statements_per_fire(engine, case_id)
    engine.close()
    compare("Engine.fire", ours, "steps/s", "plain psycopg, same transaction", theirs, target=0.6)
    note(f"SQL statements per engine fire (BEGIN/COMMIT included): {per_fire:.1f}; baseline: 5")


def _writer(url: str, ready: Any, go: Any, seconds: float, results: Any) -> None:
    engine = Engine(url)
    case_id = start_case(engine)
    for event, actor in LOOP * 5:
        engine.fire(case_id, event, actor=actor)
    ready.wait()
    go.wait()
    deadline = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < deadline:
        event, actor = LOOP[done % 2]
        engine.fire(case_id, event, actor=actor)
        done += 1
    engine.close()
    results.put(done)


def writers(url: str, processes: int, seconds: float) -> tuple[float, float]:
    """`processes` writer processes, each on its own case, for `seconds`: total steps per second, and how
    busy the machine's cores were meanwhile (0..1)."""
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(processes + 1)
    go = context.Barrier(processes + 1)
    results = context.Queue()
    workers = [
        context.Process(target=_writer, args=(url, ready, go, seconds, results)) for _ in range(processes)
    ]
    for w in workers:
        w.start()
    ready.wait()
    before = cpu_times()
    go.wait()
    total = sum(results.get(timeout=seconds + 120) for _ in workers)
    busy = busy_since(before)
    for w in workers:
        w.join()
    return total / seconds, busy


def scaling(server: str, seconds: float) -> None:
    header(f"PostgreSQL (fsync on): 8 writer processes on distinct cases vs 1, {seconds:g} s each")
    url = new_database(server)
    seed_engine(url).close()
    one, busy_one = writers(url, 1, seconds)
    eight, busy_eight = writers(url, 8, seconds)
    compare("8 writers", eight, "steps/s", "1 writer", one, target=2.5)
    note(
        f"{multiprocessing.cpu_count()} cores, busy {busy_one:.0%} with 1 writer, {busy_eight:.0%} with 8 "
        "(the writers, PostgreSQL, and anything else running)"
    )
    # If a step costs the machine as much CPU with eight writers as with one, eight can do at most this
    # many times what one does: the rest of a lone writer's step is waiting (fsync, round trips).
    if busy_one > 0:
        note(f"ceiling at one writer's CPU per step: {busy_eight / busy_one:.2f} ×")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps, shorter runs")
    parser.add_argument("--steps", type=int, help="steps per single-writer measurement")
    parser.add_argument("--seconds", type=float, help="length of each multi-writer run")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    count = args.steps or (1000 if args.quick else 3000)
    seconds = args.seconds or (3.0 if args.quick else 6.0)
    on_sqlite(count)
    if args.no_postgres:
        return
    with postgres(durable=True) as server:
        if server is None:
            return
        on_postgres(server, count)
        scaling(server, seconds)


if __name__ == "__main__":
    main()
