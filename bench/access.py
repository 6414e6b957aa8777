"""Benchmark: the permission matrix's filter on a big database. `list` and `tasks` as a person the matrix
restricts, against the same calls on the same cases with no matrix, among 100,000 cases (1,000,000 with
--million), on SQLite.

    .venv/bin/python bench/access.py             # 100,000 cases
    .venv/bin/python bench/access.py --quick     # 30,000 cases
    .venv/bin/python bench/access.py --million   # 1,000,000 cases (a few minutes)

SETUP, not measured: the mini definitions are deployed twice, into two databases: with the mini org (no
`access:`: nobody is restricted) and with the same org plus a permission matrix (employees see their own
cases, managers their department's, finance every expense claim; zoe, an employee of another
department, started one case in a thousand). The cases are bulk-inserted into the first database (as
bench/listing.py spreads them over the states, each submitted by its starter), whose file is then copied
to the second, so that both hold exactly the same rows.

Measured (median of many runs, ratio = with the matrix / without it, both in this run):
- `Engine.cases(state="manager_review", limit=50, viewer="mia")` (a manager: her department's cases)
  against `Engine.cases(state="manager_review", limit=50)` with no matrix;
- `Engine.cases(open=True, or_suspended=True, limit=50, viewer=...)` (what `sopflow --as X list` runs)
  for alice (her own: half the cases) and zoe (her own: one in a thousand) against the same list with
  no matrix, with the EXPLAIN QUERY PLAN of zoe's statement;
- `Engine.tasks("mia")` and `Engine.tasks("fay")` with the matrix against without it.
Target: each ≤ 2× (docs/performance.md).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from _harness import MINI, compare, header, median_ms, note, seed_engine, temp_dir
from listing import Statements, case_rows, explain
from sqlalchemy import insert

from sopflow.engine.runtime import Engine
from sopflow.engine.store import OrgRow
from sopflow.engine.store.tables import cases, timers

MATRIX = """
access:
  employee:
    - {actions: [view, modify], scope: own}
    - {actions: [start]}
  manager:
    - {actions: [view, export, modify, administer], scope: department}
  finance:
    - {actions: [view, modify], scope: all, definitions: [expense]}
  admin:
    - {actions: [view, export, start, modify, administer], scope: all}
  board:
    - {actions: [view, modify], scope: all, definitions: [board-vote]}
"""
RARE_STARTER = "zoe"


def matrix_org(folder: Path) -> Path:
    """The mini org with a second department, zoe in it, and a permission matrix, in `folder`."""
    text = (MINI / "org.yaml").read_text(encoding="utf-8").replace("../../../schemas", "../schemas")
    text = text.replace(
        "  office: {title: {zh: 办公室, en: Office}}\n",
        "  office: {title: {zh: 办公室, en: Office}}\n  field: {title: {zh: 外勤部, en: Field}}\n",
    )
    text = text.replace("users:\n", "users:\n  zoe: {name: Zoe, roles: [employee], department: field}\n")
    path = folder / "org.yaml"
    path.write_text(text + MATRIX, encoding="utf-8")
    return path


def fill(engine: Engine, count: int) -> float:
    """SETUP: bulk-insert `count` cases (submitted by their starter; zoe starts one in a thousand)."""
    start = time.perf_counter()
    with engine.store.engine.begin() as conn:
        for case_batch, timer_batch in case_rows(count, 20_000):
            for row in case_batch:
                if row["id"] % 1000 == 1:
                    row["starter"] = RARE_STARTER
                row["submitter"] = row["starter"]
            conn.execute(insert(cases), case_batch)
            if timer_batch:
                conn.execute(insert(timers), timer_batch)
    return time.perf_counter() - start


def with_matrix(folder: Path, plain_path: Path) -> Engine:
    """SETUP: a copy of the plain database with the org holding the matrix deployed (written straight to
    the store: `Engine.deploy` would check every open case against the new org, which changes no role)."""
    from sopflow.engine.definition.validate import load_org_file

    copy = folder / "matrix.db"
    shutil.copyfile(plain_path, copy)
    org_path = matrix_org(folder)
    org = load_org_file(org_path)
    engine = Engine(f"sqlite:///{copy}")
    row = OrgRow(
        org.id, org.content_hash, org_path.read_text(encoding="utf-8"), str(org_path), engine.clock()
    )
    engine.store.deploy(row, [])
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="30,000 cases")
    parser.add_argument("--million", action="store_true", help="1,000,000 cases")
    parser.add_argument("--cases", type=int, help="any number of cases")
    args = parser.parse_args()
    count = args.cases or (1_000_000 if args.million else 30_000 if args.quick else 100_000)
    rounds = 30 if args.quick else 100
    with temp_dir() as folder:
        path = folder / "plain.db"
        plain = seed_engine(f"sqlite:///{path}")
        header(f"SETUP (not measured): {count:,} cases bulk-inserted, the file copied for the matrix")
        seconds = fill(plain, count)
        plain.close()
        plain = Engine(f"sqlite:///{path}")
        matrix = with_matrix(folder, path)
        note(f"inserted in {seconds:.1f} s; database file {path.stat().st_size / 2**20:,.0f} MiB")

        header("one state's oldest 50, as a manager (her department) vs no matrix")
        found = len(matrix.cases(state="manager_review", limit=50, viewer="mia"))
        ours = median_ms(lambda: matrix.cases(state="manager_review", limit=50, viewer="mia"), rounds)
        base = median_ms(lambda: plain.cases(state="manager_review", limit=50), rounds)
        compare(f"with the matrix, mia ({found} listed)", ours * 1000, "µs", "no matrix", base * 1000,
                target=2.0, at_least=False)  # fmt: skip

        for viewer, what in (("alice", "her own: half the cases"), (RARE_STARTER, "her own: 1 in 1,000")):
            header(f"`sopflow --as {viewer} list` (open cases, oldest 50), {what}, vs no matrix")
            found = len(matrix.cases(open=True, or_suspended=True, limit=50, viewer=viewer))
            ours = median_ms(
                lambda v=viewer: matrix.cases(open=True, or_suspended=True, limit=50, viewer=v), rounds
            )
            base = median_ms(lambda: plain.cases(open=True, or_suspended=True, limit=50), rounds)
            compare(f"with the matrix, {viewer} ({found} listed)", ours * 1000, "µs", "no matrix",
                    base * 1000, target=2.0, at_least=False)  # fmt: skip
            if viewer == RARE_STARTER:
                with Statements(matrix) as seen:
                    matrix.cases(open=True, or_suspended=True, limit=50, viewer=viewer)
                explain(folder / "matrix.db", seen.seen[-1:])

        for user in ("mia", "fay"):
            header(f"Engine.tasks({user!r}) with the matrix vs no matrix")
            found = len(matrix.tasks(user))
            ours = median_ms(lambda u=user: matrix.tasks(u), 11)
            base = median_ms(lambda u=user: plain.tasks(u), 11)
            compare(
                f"with the matrix ({found} tasks)", ours, "ms", "no matrix", base, target=2.0, at_least=False
            )
        plain.close()
        matrix.close()


if __name__ == "__main__":
    main()
