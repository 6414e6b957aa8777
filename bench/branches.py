"""Benchmark: a case with 100 parallel branches, against one-state steps of the same engine, same run.

    .venv/bin/python bench/branches.py            # SQLite, then PostgreSQL when its binaries are there
    .venv/bin/python bench/branches.py --quick    # fewer cases

SETUP, not measured: a generated definition `fanout-N` whose state `work` has N branches of one step each
(`bI.done`, joined when all are done), and `single`, a one-state loop (`note` stays in its state), both
deployed with a one-role org on a fresh database.

Measured, alternating, each on fresh cases:
- one-state steps/s: `note` fired on `single` cases (the baseline);
- branch steps/s: the first N-1 branch steps of `fanout-N` cases (each stays in the parallel state, so its
  record carries every branch's position: the cost grows with N);
- the join: the last branch step, which completes the join and moves the case on, in ms, against the
  median one-state step in ms;
- one task per item, `items-N` (a `for_each` over N stores, each branch given to the least loaded of four
  workers, so every step also rewrites the branches people hold): the start that enters the state and gives
  the N branches, in ms, against a one-state start in ms; the item steps/s; the join, in ms.
Ratios are sopflow's branch figures over the one-state figures of the same run; no target is given.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _harness import compare, header, new_database, note, postgres, temp_dir

from sopflow.engine.runtime import Engine

ORG = """id: bench-org
title: {zh: 测, en: Bench}
roles:
  worker: {title: {zh: 员工, en: Worker}}
  admin: {title: {zh: 管理员, en: Admin}, administrator: true}
users:
  w: {name: W, roles: [worker]}
  w2: {name: W2, roles: [worker]}
  w3: {name: W3, roles: [worker]}
  w4: {name: W4, roles: [worker]}
  root: {name: Root, roles: [admin]}
"""

SINGLE = """id: single
version: 1
title: {zh: 单, en: Single}
initial: open
states:
  open:
    title: {zh: 开, en: Open}
    owner: worker
    on:
      note: {to: open}
      close: {to: closed}
  closed: {title: {zh: 关, en: Closed}, final: true}
"""


def fanout(n: int) -> str:
    branches = "".join(
        f"""        b{i}:
          title: {{zh: 支{i}, en: Branch {i}}}
          initial: doing
          states:
            doing:
              title: {{zh: 做, en: Doing}}
              owner: worker
              on: {{done: {{to: finished}}}}
            finished: {{title: {{zh: 完, en: Done}}, final: true}}
"""
        for i in range(n)
    )
    return f"""id: fanout-{n}
version: 1
title: {{zh: 分, en: Fan out}}
initial: work
states:
  work:
    title: {{zh: 分头, en: Work}}
    owner: worker
    parallel:
      branches:
{branches}      join: all
      then: joined
  joined: {{title: {{zh: 合, en: Joined}}, final: true}}
"""


def items(n: int) -> str:
    return f"""id: items-{n}
version: 1
title: {{zh: 每项, en: Per item}}
data:
  type: object
  properties:
    stores: {{type: array, items: {{type: string}}}}
initial: work
states:
  work:
    title: {{zh: 分头, en: Work}}
    owner: worker
    parallel:
      for_each: stores
      branch:
        title: {{zh: 店, en: Store}}
        initial: doing
        states:
          doing:
            title: {{zh: 做, en: Doing}}
            owner: worker
            assign: {{least_loaded: worker}}
            on: {{done: {{to: finished, by: [worker]}}}}
          finished: {{title: {{zh: 完, en: Done}}, final: true}}
      then: joined
  joined: {{title: {{zh: 合, en: Joined}}, final: true}}
"""


def run_items(engine: Engine, n: int, cases: int, rounds: int) -> None:
    """One task per item against one-state steps and starts of the same engine."""
    stores = [f"s{i}" for i in range(n)]
    start_ms, single_start_ms, item_rates, single_rates, join_ms, single_ms = [], [], [], [], [], []
    for _ in range(rounds):
        ids = []
        for _ in range(cases):
            t = time.perf_counter()
            ids.append(engine.start("single", {}, actor="w").case.id)
            single_start_ms.append((time.perf_counter() - t) * 1000)
        begin, steps = time.perf_counter(), 0
        for case_id in ids:
            for _ in range(n - 1):
                t = time.perf_counter()
                engine.fire(case_id, "note", actor="w")
                single_ms.append((time.perf_counter() - t) * 1000)
                steps += 1
        single_rates.append(steps / (time.perf_counter() - begin))
        ids = []
        for _ in range(cases):
            t = time.perf_counter()
            ids.append(engine.start(f"items-{n}", {"stores": stores}, actor="w").case.id)
            start_ms.append((time.perf_counter() - t) * 1000)
        begin, steps = time.perf_counter(), 0
        for case_id in ids:
            for store in stores[:-1]:
                engine.fire(case_id, f"{store}.done", actor="w")
                steps += 1
        item_rates.append(steps / (time.perf_counter() - begin))
        for case_id in ids:
            t = time.perf_counter()
            engine.fire(case_id, f"{stores[-1]}.done", actor="w")
            join_ms.append((time.perf_counter() - t) * 1000)
            assert engine.case(case_id).state == "joined"
    compare(
        f"a start giving {n} items", statistics.median(start_ms), "ms", "a one-state start",
        statistics.median(single_start_ms),
    )  # fmt: skip
    compare(
        f"item steps/s ({n} items)", statistics.median(item_rates), "/s", "one-state steps/s",
        statistics.median(single_rates),
    )  # fmt: skip
    compare(
        "the items' join step", statistics.median(join_ms), "ms", "a one-state step",
        statistics.median(single_ms),
    )  # fmt: skip


def run(url: str, folder: Path, n: int, cases: int, rounds: int) -> None:
    engine = Engine(url)
    engine.deploy([folder])
    single_rates, branch_rates, single_ms, join_ms = [], [], [], []
    for _ in range(rounds):
        ids = [engine.start("single", {}, actor="w").case.id for _ in range(cases)]
        start = time.perf_counter()
        steps = 0
        for case_id in ids:
            for _ in range(n - 1):
                t = time.perf_counter()
                engine.fire(case_id, "note", actor="w")
                single_ms.append((time.perf_counter() - t) * 1000)
                steps += 1
        single_rates.append(steps / (time.perf_counter() - start))
        ids = [engine.start(f"fanout-{n}", {}, actor="w").case.id for _ in range(cases)]
        start = time.perf_counter()
        steps = 0
        for case_id in ids:
            for i in range(n - 1):
                engine.fire(case_id, f"b{i}.done", actor="w")
                steps += 1
        branch_rates.append(steps / (time.perf_counter() - start))
        for case_id in ids:
            t = time.perf_counter()
            engine.fire(case_id, f"b{n - 1}.done", actor="w")
            join_ms.append((time.perf_counter() - t) * 1000)
            assert engine.case(case_id).state == "joined"
    run_items(engine, n, cases, rounds)
    engine.close()
    compare(
        f"branch steps/s ({n} branches)",
        statistics.median(branch_rates),
        "/s",
        "one-state steps/s",
        statistics.median(single_rates),
    )
    compare(
        "the join step", statistics.median(join_ms), "ms", "a one-state step", statistics.median(single_ms)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--branches", type=int, default=100)
    args = parser.parse_args()
    n = args.branches
    cases, rounds = (2, 2) if args.quick else (5, 3)
    with temp_dir() as folder:
        (folder / "org.yaml").write_text(ORG, encoding="utf-8")
        (folder / "single.yaml").write_text(SINGLE, encoding="utf-8")
        (folder / f"fanout-{n}.yaml").write_text(fanout(n), encoding="utf-8")
        (folder / f"items-{n}.yaml").write_text(items(n), encoding="utf-8")
        header(f"{n} parallel branches, SQLite")
        run(f"sqlite:///{folder / 'bench.db'}", folder, n, cases, rounds)
        header(f"{n} parallel branches, PostgreSQL")
        with postgres() as server:
            if server is None:
                return
            run(new_database(server), folder, n, cases, rounds)
    note("ratios: branch figures over one-state figures of the same run")


if __name__ == "__main__":
    main()
