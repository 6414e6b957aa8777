"""The SOP lifecycle's SQL: the log of trials, adoptions and migrations, and the write that moves one case
to another version of its definition.

A migration writes one case per transaction: the case row (its version, state, data and assignee), its
`migrate_case` audit record chained onto its trail, and its timers (cancelled, started) — all or nothing.
The update names the case's optimistic `version` and chain head as read in the same transaction, so a
step that a worker commits in between is never overwritten: the case is read and decided again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from sopflow.engine.audit import GENESIS, AuditRecord, canonical_json, iso
from sopflow.engine.errors import Conflict
from sopflow.engine.store import database
from sopflow.engine.store.driver import postgres_time, run, sqlite_time
from sopflow.engine.store.records import CaseRow, TimerSpec
from sopflow.engine.store.tables import audit, cases, lifecycle_actions

if TYPE_CHECKING:
    from sopflow.engine.store.store import Store

MAX_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One act on a definition's versions, as logged: a trial started or stopped, a version adopted, a
    migration run; accepted or refused."""

    id: int
    definition_id: str
    action: str
    versions: dict[str, Any]
    actor: str
    role: str | None
    outcome: str
    reason: str | None
    detail: dict[str, Any]
    at: datetime
    prev_hash: str = ""
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """What its hash covers: every column but `id` (its place is its link) and `hash`, `at` in the
        audit trail's format."""
        return {
            "definition_id": self.definition_id, "action": self.action, "versions": self.versions,
            "actor": self.actor, "role": self.role, "outcome": self.outcome, "reason": self.reason,
            "detail": self.detail, "at": iso(self.at), "prev_hash": self.prev_hash,
        }  # fmt: skip


def action_hash(body: dict[str, Any]) -> str:
    """The SHA-256 of a lifecycle act's body in canonical JSON: its link in the chain of the log."""
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def chain_findings(rows: Sequence[ActionRow]) -> list[tuple[int, str]]:
    """(id, what is wrong) for each act of the log whose content or link breaks the chain (oldest first)."""
    found: list[tuple[int, str]] = []
    expected = GENESIS
    for row in rows:
        if row.prev_hash != expected:
            found.append(
                (row.id, "its link to the act before does not match: one before was removed or forged")
            )
        elif action_hash(row.body()) != row.hash:
            found.append((row.id, "its content does not match its hash: it was changed after it was logged"))
        expected = row.hash
    return found


@dataclass(frozen=True, slots=True)
class PendingTimer:
    """A pending timer of a case, with the time of the record it belongs to (a deadline's span start)."""

    kind: str
    name: str
    rung: int
    due_at: datetime
    entered_seq: int
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class CaseMove:
    """What a migration writes for one case: its new row values, its record and its timer changes."""

    record: AuditRecord
    definition_version: int
    state: str
    open: bool
    data: dict[str, Any]
    assignee: str | None
    cancel: tuple[tuple[str, str, int], ...]
    start: tuple[TimerSpec, ...]


def log_action(
    store: Store,
    definition_id: str,
    action: str,
    versions: dict[str, Any],
    *,
    actor: str,
    role: str | None,
    accepted: bool,
    reason: str | None,
    detail: dict[str, Any],
    at: datetime,
) -> ActionRow:
    """Append one act to the lifecycle log, in its own transaction, chained onto the act before (its
    `prev_hash` is that one's `hash`, unique: of two writers at once, the second tries again)."""
    values: dict[str, Any] = {
        "definition_id": definition_id,
        "action": action,
        "versions": canonical_json(versions),
        "actor": actor,
        "role": role,
        "outcome": "accepted" if accepted else "refused",
        "reason": reason,
        "detail": canonical_json(detail),
        "at": at,
    }
    for attempt in range(MAX_ATTEMPTS):
        try:
            return _append(store, values)
        except IntegrityError:
            if attempt == MAX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _append(store: Store, values: dict[str, Any]) -> ActionRow:
    c = lifecycle_actions.c
    with store._write() as conn, conn.begin():
        last = conn.execute(select(c.hash).order_by(c.id.desc()).limit(1)).scalar()
        row = _action({**values, "id": 0, "prev_hash": GENESIS if last is None else str(last)})
        chained = {**values, "prev_hash": row.prev_hash, "hash": action_hash(row.body())}
        new_id = conn.execute(insert(lifecycle_actions).values(**chained)).inserted_primary_key
    assert new_id is not None
    return _action({**chained, "id": int(new_id[0])})


def head(store: Store) -> tuple[int, str]:
    """How many acts the log holds and the hash of the newest (what an anchor holds of it)."""
    rows = actions(store)
    return len(rows), rows[-1].hash if rows else GENESIS


def actions(
    store: Store, definition_id: str | None = None, *, accepted_only: bool = False
) -> list[ActionRow]:
    """The lifecycle log, oldest first (of one definition when given)."""
    query = select(lifecycle_actions).order_by(lifecycle_actions.c.id)
    if definition_id is not None:
        query = query.where(lifecycle_actions.c.definition_id == definition_id)
    if accepted_only:
        query = query.where(lifecycle_actions.c.outcome == "accepted")
    with store._read() as conn:
        return [_action(dict(r._mapping)) for r in conn.execute(query)]


def policy(store: Store, definition_id: str) -> ActionRow | None:
    """The definition's last accepted trial or adoption act (None: new cases start on the newest version).
    One indexed read: a start asks it."""
    c = lifecycle_actions.c
    query = (
        select(lifecycle_actions)
        .where(
            c.definition_id == definition_id,
            c.outcome == "accepted",
            c.action.in_(("trial_start", "trial_stop", "adopt")),
        )
        .order_by(c.id.desc())
        .limit(1)
    )
    with store._read() as conn:
        found = conn.execute(query).first()
    return None if found is None else _action(dict(found._mapping))


def case_ids(store: Store, definition_id: str, version: int) -> list[int]:
    """Ids of the cases of one definition version, in id order, read at once: paging them by id would make
    the database sort the definition's cases again for every page (its index is by state and time)."""
    c = cases.c
    query = (
        select(c.id).where(c.definition_id == definition_id, c.definition_version == version).order_by(c.id)
    )
    with store._read() as conn:
        return [int(i) for i in conn.execute(query).scalars()]


def _started_in(query: Any, since: datetime | None, until: datetime | None, trial_only: bool) -> Any:
    """`query` narrowed to cases started in [since, until) and, with `trial_only`, to those a trial's split
    started (their start record keeps `detail.trial`: canonical JSON, so `"trial":{"bucket":` begins it)."""
    c = cases.c
    if since is not None:
        query = query.where(c.created_at >= since)
    if until is not None:
        query = query.where(c.created_at < until)
    if trial_only:
        split = select(audit.c.case_id).where(
            audit.c.case_id == c.id, audit.c.seq == 1, audit.c.detail.like('%"trial":{"bucket":%')
        )
        query = query.where(split.exists())
    return query


def version_counts(
    store: Store,
    definition_id: str,
    since: datetime | None,
    visible: Any = None,
    *,
    until: datetime | None = None,
    trial_only: bool = False,
) -> dict[int, int]:
    """How many cases of each version of a definition were started (in [since, until); only those `visible`
    admits, a condition on `cases`, when given; only those a trial's split started with `trial_only`)."""
    c = cases.c
    query = select(c.definition_version, func.count()).where(c.definition_id == definition_id)
    if visible is not None:
        query = query.where(visible)
    query = _started_in(query, since, until, trial_only)
    with store._read() as conn:
        return {int(v): int(n) for v, n in conn.execute(query.group_by(c.definition_version))}


def cycle_times(
    store: Store,
    definition_id: str,
    since: datetime | None,
    visible: Any = None,
    *,
    until: datetime | None = None,
    trial_only: bool = False,
) -> dict[int, list[float]]:
    """Per version, the seconds from start to close of each closed case started in [since, until) (a closed
    case's `updated_at` is its closing: it takes no step after), of those `visible` admits when given, of
    those a trial's split started with `trial_only`."""
    c = cases.c
    query = select(c.definition_version, c.created_at, c.updated_at).where(
        c.definition_id == definition_id, c.open.is_(False)
    )
    if visible is not None:
        query = query.where(visible)
    query = _started_in(query, since, until, trial_only)
    found: dict[int, list[float]] = {}
    with store._read() as conn:
        for version, created, updated in conn.execute(query):
            seconds = (_aware(updated) - _aware(created)).total_seconds()
            found.setdefault(int(version), []).append(seconds)
    return found


def pending_timers(store: Store, case_id: int) -> list[PendingTimer]:
    """The case's pending timers with the time of the record each belongs to."""
    with store._read() as conn:
        return _pending(conn, store._sql, case_id)


_PENDING = (
    "SELECT t.kind, t.name, t.rung, t.due_at, t.entered_seq, a.at FROM timers t "
    "LEFT JOIN audit a ON a.case_id = t.case_id AND a.seq = t.entered_seq "
    "WHERE t.case_id = ? AND t.pending = ? ORDER BY t.kind, t.name, t.rung"
)
_UPDATE_CASE = (
    "UPDATE cases SET definition_version = ?, state = ?, open = ?, data = ?, assignee = ?, version = ?, "
    "updated_at = ?, audit_seq = ?, last_hash = ? WHERE id = ? AND version = ? AND audit_seq = ?"
)
_CANCEL_TIMER = (
    "UPDATE timers SET pending = ?, outcome = 'cancelled', done_at = ? "
    "WHERE case_id = ? AND pending = ? AND kind = ? AND name = ? AND rung = ?"
)


def _pending(conn: Any, sql: Any, case_id: int) -> list[PendingTimer]:
    """The case's pending timers with the time of the record each belongs to: one statement."""
    time = postgres_time if sql.postgres else sqlite_time
    return [
        PendingTimer(kind, name, int(rung), time(due), int(seq), None if at is None else _moment(str(at)))
        for kind, name, rung, due, seq, at in run(conn, sql.text(_PENDING), (case_id, True)).fetchall()
    ]


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def move_case(
    store: Store,
    case_id: int,
    decide: Callable[[CaseRow, Sequence[PendingTimer]], CaseMove | None],
    *,
    now: datetime,
) -> tuple[CaseRow, CaseMove | None]:
    """Read the case and its pending timers, let `decide` plan its move (None: it stays; nothing is
    written) and write it, in one transaction; again when another writer changed the case in between.
    The case as read, and the move written (or None)."""
    sql = store._sql
    for _attempt in range(MAX_ATTEMPTS):
        with store._write() as conn:
            tx = database.StepTransaction(conn)
            try:
                row = store._case(conn, case_id)
                move = decide(row, _pending(conn, sql, case_id))
                if move is None:
                    tx.rollback()
                    return row, None
                if not _write_move(conn, sql, row, move, now):
                    tx.rollback()
                    continue
                tx.commit()
                return row, move
            except BaseException:
                if tx.active:
                    tx.rollback()
                raise
    raise Conflict(
        f"case {case_id} kept changing while it was being migrated", hint="run the migration again"
    )


def _write_move(conn: Any, sql: Any, row: CaseRow, move: CaseMove, now: datetime) -> bool:
    """The case row updated if it is still as read (False: another writer changed it first), then its
    record and its timers."""
    rec = move.record
    stamp = sql.time(now)
    values = (
        move.definition_version, move.state, move.open, canonical_json(move.data), move.assignee,
        row.version + 1, stamp, rec.seq, rec.hash, row.id, row.version, row.audit_seq,
    )  # fmt: skip
    if run(conn, sql.text(_UPDATE_CASE), values).rowcount != 1:
        return False
    run(conn, sql.insert_audit, sql.audit_values(rec))
    for kind, name, rung in move.cancel:
        run(conn, sql.text(_CANCEL_TIMER), (False, stamp, row.id, True, kind, name, rung))
    if move.start:
        run(conn, *sql.start_timers(row.id, rec.seq, move.start))
    return True


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _action(values: dict[str, Any]) -> ActionRow:
    return ActionRow(
        id=int(values["id"]),
        definition_id=values["definition_id"],
        action=values["action"],
        versions=json.loads(values["versions"]),
        actor=values["actor"],
        role=values["role"],
        outcome=values["outcome"],
        reason=values["reason"],
        detail=json.loads(values["detail"]),
        at=_aware(values["at"]),
        prev_hash=values.get("prev_hash", ""),
        hash=values.get("hash", ""),
    )
