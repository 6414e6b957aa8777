"""Benchmark: due schedule periods started per second by 1 and by 4 worker processes sharing one
PostgreSQL database.

    .venv/bin/python bench/schedules.py            # 10,000 due periods per run
    .venv/bin/python bench/schedules.py --quick    # 2,000

SETUP, not measured: for each run a fresh database with one definition whose schedule starts a case
every minute (`* * * * *`), deployed N minutes before the moment the workers look at: N periods are due,
as after N minutes with no worker running. The throwaway cluster keeps PostgreSQL's durable defaults.

Measured: the wall time from the moment the workers are released until the last one has nothing left;
each worker process runs `Scheduler.start_due` for that moment (each period: an advisory lock tried, the
period's row looked for, the case, its start record and the period's row written in one transaction).
Every period must start exactly once: the counts are checked. Ratio = 4 workers / 1 worker.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _harness import busy_since, compare, cpu_times, header, new_database, note, postgres
from sqlalchemy import func, select

from sopflow.engine.runtime import Engine
from sopflow.engine.scheduler import Scheduler
from sopflow.engine.store.tables import cases, schedule_periods

MOMENT = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
"""The moment the workers start periods for (a fixed one: the count of due periods is exact)."""

DEFINITION = """\
id: every-minute
version: 1
title: {zh: 每分钟, en: Every minute}
data:
  type: object
  properties:
    period: {type: string}
initial: open
states:
  open:
    title: {zh: 进行中, en: Open}
    owner: staff
    on:
      close: {to: closed}
  closed:
    title: {zh: 已关闭, en: Closed}
    final: true
schedules:
  minutely:
    cron: "* * * * *"
"""
ORG = """\
id: bench-co
title: {zh: 测试公司, en: Bench company}
roles:
  staff: {title: {zh: 员工, en: Staff}}
  admin: {title: {zh: 管理员, en: Administrator}, administrator: true}
users:
  ann: {name: Ann, roles: [staff]}
  root: {name: Root, roles: [admin]}
"""


def fill(url: str, count: int) -> None:
    """SETUP: the definition deployed `count` minutes before MOMENT."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "every-minute.yaml").write_text(DEFINITION, encoding="utf-8")
        Path(folder, "org.yaml").write_text(ORG, encoding="utf-8")
        deployed = MOMENT - timedelta(minutes=count)
        engine = Engine(url, clock=lambda: deployed)
        engine.deploy([Path(folder)])
        engine.close()


def _work(url: str, ready: Any, go: Any, results: Any) -> None:
    engine = Engine(url)
    scheduler = Scheduler(engine)
    engine.org()  # warm: the org and the definition are loaded before the clock starts
    engine.compiled("every-minute", 1)
    ready.wait()
    go.wait()
    started = scheduler.start_due(MOMENT)
    results.put((time.perf_counter(), started))
    engine.close()


def run(url: str, processes: int) -> tuple[float, int, float]:
    """(seconds, started, busy) for `processes` workers starting the due periods of `url`."""
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
    outcomes = [results.get(timeout=900) for _ in workers]
    busy = busy_since(before)
    for w in workers:
        w.join()
    end = max(t for t, _ in outcomes)
    return end - start, sum(n for _, n in outcomes), busy


def counted(url: str) -> tuple[int, int, int]:
    """(cases, period rows, distinct periods among the cases' data)."""
    engine = Engine(url)
    with engine.store.engine.connect() as conn:
        n_cases = conn.execute(select(func.count()).select_from(cases)).scalar() or 0
        n_rows = conn.execute(select(func.count()).select_from(schedule_periods)).scalar() or 0
        distinct = conn.execute(select(func.count(func.distinct(cases.c.data)))).scalar() or 0
    engine.close()
    return int(n_cases), int(n_rows), int(distinct)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 due periods per run")
    parser.add_argument("--periods", type=int, help="due periods per run")
    args = parser.parse_args()
    count = args.periods or (2_000 if args.quick else 10_000)
    header(f"PostgreSQL (fsync on): {count:,} due schedule periods, started by 1 and by 4 worker processes")
    with postgres(durable=True) as server:
        if server is None:
            return
        rates: dict[int, float] = {}
        for processes in (1, 4):
            url = new_database(server)
            fill(url, count)
            seconds, started, busy = run(url, processes)
            n_cases, n_rows, distinct = counted(url)
            rates[processes] = started / seconds
            note(
                f"{processes} worker(s): {started:,} periods started in {seconds:.1f} s "
                f"({started / seconds:,.0f}/s); {n_cases:,} cases, {n_rows:,} period rows, {distinct:,} "
                f"distinct periods; cores busy {busy:.0%}"
            )
            if not started == n_cases == n_rows == distinct == count:
                note(f"!! expected {count:,} of each: the exactly-once check FAILED")
        compare("4 workers", rates[4], "periods/s", "1 worker", rates[1])
        note(f"this machine has {multiprocessing.cpu_count()} cores")


if __name__ == "__main__":
    main()
