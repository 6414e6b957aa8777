"""The permission matrix in SQL, and the access log.

A `Scope` (the cases one person may reach, resolved by `engine.access`) becomes a WHERE condition here:
as the driver's own SQL for the listing statements (`engine.store.driver`), and as a SQLAlchemy expression
for the statements built with Core (exports, reports). Both say the same: a case is reached when a part
admits it, i.e. it is of the part's definitions (or any) and, when the part names people, it was started,
is held or was submitted by one of them, or it waits at one of the part's `steps`. `admitting` says the
same in Python of one row (a test holds the three equal).

The access log is one hash chain over every row in `seq` order, appended to in its own transaction: a
row's `seq` is the last one's plus one (two writers racing for it: one commits, the other is refused by
the primary key and tries again on the new last row).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, and_, false, insert, or_, select, true
from sqlalchemy.exc import IntegrityError

from sopflow.engine.audit import GENESIS, canonical_json
from sopflow.engine.store.records import Scope, ScopePart
from sopflow.engine.store.tables import access_log, cases

Condition = ColumnElement[bool]
"""A WHERE condition, as SQLAlchemy builds it (for readers that join or filter on `cases`)."""
_ATTEMPTS = 20
_PEOPLE_COLUMNS = ("starter", "assignee", "submitter")


def admitting(
    scope: Scope,
    definition_id: str,
    state: str,
    starter: str,
    assignee: str | None,
    submitter: str | None,
) -> list[ScopePart]:
    """The parts of `scope` that admit a case with these columns (none: the case is out of reach)."""
    found: list[ScopePart] = []
    for part in scope.parts:
        if part.definitions is not None and definition_id not in part.definitions:
            continue
        if part.people is not None:
            held = any(who in part.people for who in (starter, assignee, submitter) if who is not None)
            if not (held or (definition_id, state) in part.steps):
                continue
        found.append(part)
    return found


def _by_definition(steps: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for definition_id, state in steps:
        grouped.setdefault(definition_id, []).append(state)
    return grouped


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def scope_sql(scope: Scope) -> tuple[str, list[Any]]:
    """The scope as a condition in the driver's SQL on `cases` (`?` markers), with its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    for part in scope.parts:
        conditions: list[str] = []
        if part.definitions is not None:
            conditions.append(
                f"definition_id IN ({_marks(len(part.definitions))})" if part.definitions else "1 = 0"
            )
            params += part.definitions
        if part.people is not None:
            who: list[str] = []
            if part.people:
                for column in _PEOPLE_COLUMNS:
                    who.append(f"{column} IN ({_marks(len(part.people))})")
                    params += part.people
            for definition_id, states in _by_definition(part.steps).items():
                who.append(f"(definition_id = ? AND state IN ({_marks(len(states))}))")
                params += [definition_id, *states]
            conditions.append("(" + " OR ".join(who) + ")" if who else "1 = 0")
        clauses.append("(" + " AND ".join(conditions) + ")" if conditions else "1 = 1")
    return ("(" + " OR ".join(clauses) + ")" if clauses else "1 = 0"), params


def scope_clause(scope: Scope | None) -> Condition:
    """The scope as a SQLAlchemy condition on `cases` (None: every case)."""
    if scope is None:
        return true()
    clauses: list[ColumnElement[bool]] = []
    for part in scope.parts:
        conditions: list[ColumnElement[bool]] = []
        if part.definitions is not None:
            conditions.append(cases.c.definition_id.in_(part.definitions))
        if part.people is not None:
            who: list[ColumnElement[bool]] = [cases.c[c].in_(part.people) for c in _PEOPLE_COLUMNS]
            for definition_id, states in _by_definition(part.steps).items():
                who.append(and_(cases.c.definition_id == definition_id, cases.c.state.in_(states)))
            conditions.append(or_(*who))
        clauses.append(and_(true(), *conditions))
    return or_(*clauses) if clauses else false()


# -- the access log ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One row of the access log."""

    seq: int
    at: str
    actor: str
    action: str
    target: str
    outcome: str
    """`refused`, or `granted` (an export)."""
    records: int
    """How many records the act concerned: the cases an export held; 0 for a refusal."""
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Every field but `hash`: what the hash covers."""
        body = asdict(self)
        del body["hash"]
        return body


def entry_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def sealed_entry(
    seq: int,
    at: str,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    records: int,
    detail: dict[str, Any],
    prev_hash: str,
) -> AccessEntry:
    """The entry with these fields and the hash of them."""
    unsealed = AccessEntry(seq, at, actor, action, target, outcome, records, detail, prev_hash, "")
    return replace(unsealed, hash=entry_hash(unsealed.body()))


def append(
    store: Any,
    *,
    at: str,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    records: int,
    detail: dict[str, Any],
) -> AccessEntry:
    """Append one row to the access log, chained onto the last, in its own transaction."""
    last_query = select(access_log.c.seq, access_log.c.hash).order_by(access_log.c.seq.desc()).limit(1)
    for attempt in range(_ATTEMPTS):
        try:
            with store._write() as conn, conn.begin():
                last = conn.execute(last_query).first()
                seq, prev = (int(last[0]) + 1, str(last[1])) if last is not None else (1, GENESIS)
                entry = sealed_entry(seq, at, actor, action, target, outcome, records, detail, prev)
                values = {**entry.body(), "detail": canonical_json(detail), "hash": entry.hash}
                conn.execute(insert(access_log).values(**values))
            return entry
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def entries(store: Any, *, actor: str | None = None, batch: int = 1000) -> Iterator[AccessEntry]:
    """The access log in order (of one actor when given), a batch at a time."""
    import json

    last = 0
    while True:
        query = select(access_log).where(access_log.c.seq > last).order_by(access_log.c.seq).limit(batch)
        if actor is not None:
            query = query.where(access_log.c.actor == actor)
        with store._read() as conn:
            rows = conn.execute(query).fetchall()
        if not rows:
            return
        for r in rows:
            m = dict(r._mapping)
            m["seq"] = int(m["seq"])
            m["detail"] = json.loads(m["detail"])
            yield AccessEntry(**m)
        last = int(rows[-1].seq)


def chain_findings(rows: Sequence[AccessEntry] | Iterator[AccessEntry]) -> Iterator[tuple[int, str]]:
    """(seq, what is wrong) for each row whose hash, link or number breaks the chain."""
    expected_prev, expected_seq = GENESIS, 1
    for row in rows:
        if row.seq != expected_seq:
            yield row.seq, f"it is row {row.seq} where row {expected_seq} was due: rows were removed"
        elif row.prev_hash != expected_prev:
            yield row.seq, "its link to the row before does not match: a row before it was changed"
        elif entry_hash(row.body()) != row.hash:
            yield row.seq, "its content does not match its hash: it was changed after it was written"
        expected_prev, expected_seq = row.hash, row.seq + 1


def head(store: Any) -> tuple[int, str] | None:
    """The access log's last row: its number and hash (None: the log is empty)."""
    query = select(access_log.c.seq, access_log.c.hash).order_by(access_log.c.seq.desc()).limit(1)
    with store._read() as conn:
        last = conn.execute(query).first()
    return None if last is None else (int(last[0]), str(last[1]))


def hash_at(store: Any, seq: int) -> str | None:
    """The hash of the access log's row `seq` (None: there is none)."""
    with store._read() as conn:
        found = conn.execute(select(access_log.c.hash).where(access_log.c.seq == seq)).scalar()
    return None if found is None else str(found)
