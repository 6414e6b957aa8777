"""Benchmark: exports and backups on SQLite.

    .venv/bin/python bench/governance.py            # 100,000 cases exported; a ~1 GB backup (minutes)
    .venv/bin/python bench/governance.py --quick    # 5,000 cases; a ~20 MB backup (seconds)

Export, measured: `Engine.export(..., "jsonl")` of every case with its events into a file, against a
baseline in the same run: one plain SELECT of the same cases joined with their audit rows through the
sqlite3 module, written as the same JSON Lines (one case per line) by the same json.dumps. Printed: the
time of each, their ratio, and the process's resident memory before and after each (flat means the export
holds one batch, not the whole database). SETUP, not measured: the cases and two audit records each
(start, submit) are bulk-inserted with SQLAlchemy Core; their hashes are not real (an export does not
verify them).

Backup, measured: `Engine.backup` (SQLite's online backup, then the copy restored into a scratch file,
`audit verify --all` on it, counts and chain heads compared, the manifest written) of a database grown
to about 1 GB by real cases, each carrying ~200 KB of data (the largest a case may hold is 256 KB), so
that the trail verifies; printed: the file's size, the whole command's time and its throughput.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _harness import ROOT, compare, header, note, rss_mib, seed_engine, temp_dir
from sqlalchemy import insert

from sopflow.engine.store.tables import audit, cases

START = datetime(2025, 1, 1, tzinfo=UTC)
HASH = "0" * 64


def bulk_cases(engine: Any, n: int) -> None:
    """`n` expense cases in manager_review with their start and submit records, inserted directly."""
    store = engine.store.engine
    batch = 5000
    with store.begin() as conn:
        for first in range(1, n + 1, batch):
            ids = range(first, min(n, first + batch - 1) + 1)
            rows, records = [], []
            for i in ids:
                at = START + timedelta(seconds=i)
                rows.append(
                    {
                        "id": i, "definition_id": "expense", "definition_version": 1,
                        "state": "manager_review", "open": True,
                        "data": json.dumps({"amount": 100 + i % 900, "purpose": f"taxi {i}"}),
                        "version": 2, "starter": "alice", "assignee": "mia", "submitter": "alice",
                        "entered_seq": 2, "entered_at": at, "created_at": at, "updated_at": at,
                        "audit_seq": 2, "last_hash": HASH, "start_key": None,
                    }
                )  # fmt: skip
                for seq, event, before, after in (
                    (1, "start", None, "draft"),
                    (2, "submit", "draft", "manager_review"),
                ):
                    records.append(
                        {
                            "case_id": i, "seq": seq, "at": at.isoformat().replace("+00:00", "Z"),
                            "actor": "alice", "role": "employee", "on_behalf_of": None, "event": event,
                            "from_state": before,
                            "to_state": after, "outcome": "accepted", "payload": "{}", "data_change": "{}",
                            "comment": None, "reason": None, "detail": "{}", "definition_hash": HASH,
                            "prev_hash": HASH, "hash": HASH,
                        }
                    )  # fmt: skip
            conn.execute(insert(cases), rows)
            conn.execute(insert(audit), records)


def plain_export(path: Path, out: Path) -> None:
    """The baseline: one SELECT of the cases with their records, grouped into one JSON line per case."""
    conn = sqlite3.connect(path)
    query = (
        "SELECT c.id, c.definition_id, c.definition_version, c.state, c.open, c.starter, c.assignee, "
        "c.submitter, c.created_at, c.updated_at, c.data, a.seq, a.at, a.event, a.from_state, a.to_state, "
        "a.outcome, a.actor, a.role, a.on_behalf_of, a.payload, a.data_change, a.comment, a.reason, a.detail "
        "FROM cases c JOIN audit a ON a.case_id = c.id ORDER BY c.id, a.seq"
    )

    def grouped() -> Iterator[dict[str, Any]]:
        current: dict[str, Any] | None = None
        for r in conn.execute(query):
            if current is None or current["case"] != r[0]:
                if current is not None:
                    yield current
                current = {
                    "case": r[0], "definition": r[1], "version": r[2], "state": r[3], "open": bool(r[4]),
                    "starter": r[5], "assignee": r[6], "submitter": r[7], "created_at": r[8],
                    "updated_at": r[9], "data": json.loads(r[10]), "events": [],
                }  # fmt: skip
            current["events"].append(
                {
                    "seq": r[11], "at": r[12], "event": r[13], "from_state": r[14], "to_state": r[15],
                    "outcome": r[16], "actor": r[17], "role": r[18], "on_behalf_of": r[19],
                    "payload": json.loads(r[20]), "data_change": json.loads(r[21]), "comment": r[22],
                    "reason": r[23], "detail": json.loads(r[24]),
                }
            )  # fmt: skip
        if current is not None:
            yield current

    with out.open("wb") as handle:
        for case in grouped():
            handle.write(json.dumps(case, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
    conn.close()


EXPORT_IN_A_CHILD = """
import resource, sys
from sopflow.engine.runtime import Engine
with Engine(sys.argv[1]) as sop, open(sys.argv[2], "wb") as out:
    report = sop.export(out, "jsonl")
print(report.cases, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def bench_export_peaks(folder: Path, n: int) -> None:
    """The peak resident memory of a process that does nothing but export n/10 cases, and of one that
    exports n (the databases filled by this process, not measured): flat, the two peaks are the same."""
    header(f"peak memory of a process exporting {n // 10:,} cases, and of one exporting {n:,} (JSON Lines)")
    for size in (n // 10, n):
        path = folder / f"peak-{size}.db"
        engine = seed_engine(f"sqlite:///{path}")
        bulk_cases(engine, size)
        engine.close()
        child = [
            sys.executable,
            "-c",
            EXPORT_IN_A_CHILD,
            f"sqlite:///{path}",
            str(folder / f"peak-{size}.jsonl"),
        ]
        done = subprocess.run(child, capture_output=True, text=True, check=True, cwd=ROOT)
        cases, peak = (int(x) for x in done.stdout.split())
        note(f"{cases:>9,} cases exported: peak resident memory of the exporting process {peak:,} MiB")
        path.unlink()


def bench_export(folder: Path, n: int) -> None:
    header(f"export of {n:,} cases with their events (JSON Lines, SQLite)")
    path = folder / "export.db"
    engine = seed_engine(f"sqlite:///{path}")
    bulk_cases(engine, n)
    before = rss_mib()
    started = time.perf_counter()
    with (folder / "engine.jsonl").open("wb") as out:
        report = engine.export(out, "jsonl")
    took = time.perf_counter() - started
    after = rss_mib()
    started = time.perf_counter()
    plain_export(path, folder / "plain.jsonl")
    base = time.perf_counter() - started
    compare("Engine.export, s", took, "s", "plain SELECT to JSON Lines, s", base, target=3.0, at_least=False)
    note(f"{report.cases:,} cases, {report.events:,} events; {n / took:,.0f} cases/s")
    note(
        f"resident memory {before:,.0f} MiB before, {after:,.0f} MiB after the export (flat: one batch held)"
    )
    engine.close()


def bench_backup(folder: Path, megabytes: int) -> None:
    header(f"backup + verify of a ~{megabytes:,} MB SQLite database")
    path = folder / "big.db"
    engine = seed_engine(f"sqlite:///{path}")
    filler = "x" * 200_000
    cases_needed = max(1, megabytes * 1_000_000 // 420_000)  # the data twice: in the case and in the record
    for i in range(cases_needed):
        engine.start("expense", {"amount": 10, "purpose": f"{i} {filler}"}, actor="alice")
    engine.close()
    size = path.stat().st_size / 1e6
    from sopflow.engine.runtime import Engine

    with Engine(f"sqlite:///{path}") as sop:
        started = time.perf_counter()
        report = sop.backup(folder / "big-backup.db")
        took = time.perf_counter() - started
    note(f"database {size:,.0f} MB, {report.manifest.counts['cases']:,} cases")
    note(f"backup + restore + audit verify + compare: {took:,.1f} s ({size / took:,.0f} MB/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5,000 cases and a ~20 MB backup")
    args = parser.parse_args()
    with temp_dir() as folder:
        bench_export_peaks(folder, 5_000 if args.quick else 100_000)
        bench_export(folder, 5_000 if args.quick else 100_000)
        bench_backup(folder, 20 if args.quick else 1_000)


if __name__ == "__main__":
    main()
