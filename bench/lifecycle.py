"""Benchmark: migrating running cases to a new version, against the durable step rate in the same run.

    .venv/bin/python bench/lifecycle.py             # 100,000 cases on SQLite (a few minutes)
    .venv/bin/python bench/lifecycle.py --quick     # 2,000 cases (run_all)
    .venv/bin/python bench/lifecycle.py --postgres  # PostgreSQL too

The cases are `order` cases of tests/fixtures/lifecycle in `intake` (one started by the engine, the
rest copies of its rows, so that seeding does not take longer than what is measured). `Engine.migrate`
(what `sopflow migrate order --from 1 --to 2 --default channel=web` runs) then moves each in its own
durable transaction: read the case and its timers, decide (`engine.lifecycle.plan`: the state, the data
against the new schema, the deadline recalculated to 3 days), update the row under its optimistic
version, append the sealed `migrate_case` record, cancel and start the timer, commit.

The baseline is the engine's durable step rate measured in the same run on the same kind of database,
just before and just after the migration (their mean: the load of a shared machine moves in minutes):
`Engine.fire` of the mini definition's `submit`/`send_back` loop on one case. Ratio = cases migrated per
second / durable steps per second (1.0: a case moves as fast as a step is taken).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from _harness import ROOT, compare, header, new_database, note, postgres, seed_engine, temp_dir

from sopflow.engine.runtime import Engine

FIXTURE = ROOT / "tests" / "fixtures" / "lifecycle"
LOOP = (("submit", "alice"), ("send_back", "mia"))


def step_rate(url: str, count: int) -> float:
    """Durable steps per second: the mini loop fired on one case."""
    with seed_engine(url) as engine:
        case_id = engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice").case.id
        for event, actor in LOOP * 10:
            engine.fire(case_id, event, actor=actor)
        start = time.perf_counter()
        for i in range(count):
            event, actor = LOOP[i % 2]
            engine.fire(case_id, event, actor=actor)
        return count / (time.perf_counter() - start)


def seed(url: str, cases: int) -> None:
    """`cases` cases of order@1 in `intake`: the first started by the engine, the others copies of its rows
    (case, audit records, timers) made in one statement each, so that seeding takes seconds, not minutes.
    The copies' records keep the first case's hashes: the bench migrates, it does not verify."""
    from sqlalchemy import create_engine, text

    with Engine(url, durable=False) as seeder:
        seeder.deploy([FIXTURE / "org.yaml", FIXTURE / "order-1.yaml"])
        first = seeder.start("order", {"item": "pen", "qty": 3}, actor="mia").case.id
    columns = (
        "definition_id, definition_version, state, open, data, version, starter, assignee, submitter, "
        "entered_seq, entered_at, created_at, updated_at, audit_seq, last_hash"
    )
    audit = (
        "seq, at, actor, role, on_behalf_of, event, from_state, to_state, outcome, payload, data_change, "
        "comment, reason, detail, definition_hash, prev_hash, hash"
    )
    timer = "kind, name, rung, due_at, pending, entered_seq"
    numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {cases - 1}) "
    db = create_engine(url)
    try:
        with db.begin() as conn:
            for table, key, names in (
                ("cases", "id", columns),
                ("audit", "case_id", audit),
                ("timers", "case_id", timer),
            ):
                copy = f"INSERT INTO {table} ({key}, {names}) {numbers}"
                copy += f"SELECT :f + i, {names} FROM {table}, n WHERE {key} = :f"
                conn.execute(text(copy), {"f": first})
            if db.dialect.name == "postgresql":
                # Rows copied in bulk have no statistics until autovacuum comes by: without them the
                # planner would scan the tables a busy database would have indexes and statistics for.
                conn.execute(text("ANALYZE"))
    finally:
        db.dispose()


def migrate_rate(url: str, cases: int) -> float:
    """Cases migrated per second, over `cases` cases."""
    began = time.perf_counter()
    seed(url, cases)
    note(f"seeded {cases:,} cases in {time.perf_counter() - began:.1f} s")
    with Engine(url) as engine:
        engine.deploy([FIXTURE])
        start = time.perf_counter()
        report = engine.migrate("order", 1, 2, actor="root", defaults={"channel": "web"})
        seconds = time.perf_counter() - start
    if report.moved != cases:
        raise SystemExit(f"only {report.moved} of {cases} cases moved: {report.cases[0].reason}")
    return cases / seconds


def run(label: str, url_of: Callable[[str], str], cases: int, steps: int) -> None:
    header(f"migrating {cases:,} cases, {label}")
    before = step_rate(url_of("steps-before"), steps)
    moved_per_s = migrate_rate(url_of("cases"), cases)
    after = step_rate(url_of("steps-after"), steps)
    note(f"durable steps/s before the migration {before:,.1f}, after it {after:,.1f}")
    compare(
        "cases migrated per second",
        moved_per_s,
        "/s",
        "durable steps per second (Engine.fire)",
        (before + after) / 2,
    )
    note(f"{cases:,} cases in {cases / moved_per_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 cases instead of 100,000")
    parser.add_argument("--cases", type=int, help="how many cases to migrate")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too")
    args = parser.parse_args()
    cases = args.cases or (2_000 if args.quick else 100_000)
    steps = 500 if args.quick else 2_000
    with temp_dir() as folder:
        run("SQLite (WAL, synchronous=FULL)", lambda name: f"sqlite:///{folder / name}.db", cases, steps)
    if args.postgres:
        with postgres() as server:
            if server is not None:
                run("PostgreSQL (fsync on)", lambda _name: new_database(server), cases, steps)


if __name__ == "__main__":
    main()
