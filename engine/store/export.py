"""Reading cases and their audit trails for an export, a batch at a time.

Cases are read in order of their number, `batch` at a time, each batch with the trails of its cases in one
more statement: what is held at once is one batch, however many cases there are, and paging by the last
case number read (not by offset) keeps every page as cheap as the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select

from sopflow.engine.audit import AuditRecord
from sopflow.engine.store import database
from sopflow.engine.store.access import scope_clause
from sopflow.engine.store.records import CaseRow, Scope
from sopflow.engine.store.tables import audit, cases


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """Which cases: of one definition (or all), created from `since` (inclusive) to `until` (exclusive)."""

    definition_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    scope: Scope | None = None
    """Only the cases the reader may export (None: every case)."""


def _where(query: ExportQuery) -> list[Any]:
    conditions: list[Any] = []
    if query.definition_id is not None:
        conditions.append(cases.c.definition_id == query.definition_id)
    if query.since is not None:
        conditions.append(cases.c.created_at >= query.since)
    if query.until is not None:
        conditions.append(cases.c.created_at < query.until)
    if query.scope is not None:
        conditions.append(scope_clause(query.scope))
    return conditions


def count(engine: Any, query: ExportQuery) -> int:
    """How many cases the export will hold (for its progress)."""
    with database.connect_or_explain(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(cases).where(*_where(query))).scalar_one())


def cases_with_trails(
    engine: Any, query: ExportQuery, batch: int = 500
) -> Iterator[tuple[CaseRow, list[AuditRecord]]]:
    """Every case the query selects, oldest number first, with its audit trail."""
    last = 0
    conditions = _where(query)
    while True:
        with database.connect_or_explain(engine) as conn:
            rows = conn.execute(
                select(cases).where(cases.c.id > last, *conditions).order_by(cases.c.id).limit(batch)
            ).fetchall()
            if not rows:
                return
            ids = [int(r.id) for r in rows]
            trails: dict[int, list[AuditRecord]] = {i: [] for i in ids}
            for r in conn.execute(
                select(audit).where(audit.c.case_id.in_(ids)).order_by(audit.c.case_id, audit.c.seq)
            ):
                record = _record(r)
                trails[record.case_id].append(record)
        for r in rows:
            yield _case(r), trails[int(r.id)]
        last = ids[-1]


def _case(row: Row[Any]) -> CaseRow:
    m = dict(row._mapping)
    return CaseRow(
        id=int(m["id"]),
        definition_id=m["definition_id"],
        definition_version=int(m["definition_version"]),
        state=m["state"],
        open=bool(m["open"]),
        data=json.loads(m["data"]),
        version=int(m["version"]),
        starter=m["starter"],
        assignee=m["assignee"],
        submitter=m["submitter"],
        entered_seq=int(m["entered_seq"]),
        entered_at=m["entered_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        audit_seq=int(m["audit_seq"]),
        last_hash=m["last_hash"],
        start_key=m["start_key"],
    )


def _record(row: Row[Any]) -> AuditRecord:
    m = dict(row._mapping)
    for name in ("payload", "data_change", "detail"):
        m[name] = json.loads(m[name])
    m["case_id"] = int(m["case_id"])
    return AuditRecord(**m)
