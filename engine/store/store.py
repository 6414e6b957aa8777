"""The store: every read and write of sopflow's database, each write one transaction.

A step is written by `Store.fire`: read the case, let the caller decide (`decide(row, reads)` returns a
`Write`), then update the case only if its version and audit sequence are still the ones read, append the
audit record, start and cancel timers, remember the idempotency key, commit. If another writer got there
first, the whole transaction is retried from the read (the caller's `decide` sees the new case and may
refuse, e.g. with a `Conflict` when it was told to expect the old version).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, bindparam, cast, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from engine.audit import GENESIS, AuditRecord, canonical_json
from engine.errors import Conflict, NotFound
from engine.store import database
from engine.store.records import (
    CaseChange,
    CaseQuery,
    CaseRow,
    DefinitionRow,
    DelegationRow,
    Fired,
    NotificationRow,
    OrgRow,
    OverdueRow,
    StoredVote,
    TimerRow,
    Write,
)
from engine.store.tables import (
    audit,
    cases,
    definitions,
    delegations,
    deliveries,
    fire_keys,
    notifications,
    orgs,
    timers,
)

MAX_ATTEMPTS = 20
_TIMER_COLUMNS = (
    timers.c.id,
    timers.c.case_id,
    timers.c.kind,
    timers.c.name,
    timers.c.rung,
    timers.c.due_at,
    timers.c.entered_seq,
)

# The statements of a step, built once. Building a statement (coercing each value into a bound parameter,
# computing its cache key) cost more than running it; these take their values at execution, under names
# that start with `w_` where a name could clash with a column's. What runs is the same SQL as before.
_CASE_BY_ID = select(cases).where(cases.c.id == bindparam("w_case_id"))
_FIRE_KEY_SEQ = select(fire_keys.c.seq).where(
    fire_keys.c.case_id == bindparam("w_case_id"), fire_keys.c.key == bindparam("w_key")
)
_INSERT_FIRE_KEY = insert(fire_keys)
_UPDATE_CHAIN = update(cases).where(
    cases.c.id == bindparam("w_case_id"),
    cases.c.version == bindparam("w_version"),
    cases.c.audit_seq == bindparam("w_audit_seq"),
)
"""The conditional update of a case row; the columns to set are the execution's other parameters."""
_UPDATE_STEP = _UPDATE_CHAIN.values(version=cases.c.version + 1)
_INSERT_AUDIT = insert(audit)
_INSERT_TIMERS = insert(timers)
_INSERT_NOTIFICATIONS = insert(notifications)
_PENDING_OF_CASE = (timers.c.case_id == bindparam("w_case_id"), timers.c.pending.is_(True))
_TIMER_NAMES = timers.c.name.in_(bindparam("w_names", expanding=True))
_CANCEL = update(timers).values(pending=False, outcome="cancelled")
"""Cancel pending timers of a case; `done_at` is bound at execution."""
_CANCEL_TIMEOUTS = _CANCEL.where(*_PENDING_OF_CASE, timers.c.kind == "timeout")
_CANCEL_NAMED = _CANCEL.where(*_PENDING_OF_CASE, _TIMER_NAMES)
_CANCEL_BOTH = _CANCEL.where(*_PENDING_OF_CASE, or_(timers.c.kind == "timeout", _TIMER_NAMES))
_CLOSE_BREACHED = (
    update(timers)
    .where(
        timers.c.case_id == bindparam("w_case_id"),
        timers.c.kind == "deadline",
        timers.c.outcome == "breached",
        _TIMER_NAMES,
    )
    .values(outcome="late")
)
_RUNNING_DEADLINES = select(timers.c.name).where(
    timers.c.case_id == bindparam("w_case_id"),
    timers.c.kind == "deadline",
    or_(timers.c.pending.is_(True), timers.c.outcome == "breached"),
)
_LATEST_ORG = (
    select(orgs.c.org_id, orgs.c.content_hash, orgs.c.source_text, orgs.c.file, orgs.c.deployed_at)
    .order_by(orgs.c.id.desc())
    .limit(1)
)
_LATEST_ORG_HASH = select(orgs.c.content_hash).order_by(orgs.c.id.desc()).limit(1)
_GRANTS = select(delegations).where(
    delegations.c.kind == "grant",
    delegations.c.id.not_in(
        select(delegations.c.revokes).where(
            delegations.c.kind == "revoke", delegations.c.revokes.is_not(None)
        )
    ),
)
"""Grants (not revocations) that were not revoked."""
_GRANTS_TO = _GRANTS.where(delegations.c.delegate == bindparam("w_delegate")).order_by(
    delegations.c.id.desc()
)
_OPEN_LOAD = (
    select(cases.c.assignee, func.count())
    .where(cases.c.open.is_(True), cases.c.assignee.in_(bindparam("w_members", expanding=True)))
    .group_by(cases.c.assignee)
)


class Reads:
    """Reads a `decide` callback may make inside the write transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def votes(self, case_id: int, since_seq: int) -> list[StoredVote]:
        """Accepted approve/reject records after `since_seq` (the current visit of an approval state)."""
        rows = self._conn.execute(
            select(audit.c.actor, audit.c.role, audit.c.event, audit.c.on_behalf_of)
            .where(
                audit.c.case_id == case_id,
                audit.c.seq > since_seq,
                audit.c.outcome == "accepted",
                audit.c.event.in_(("approve", "reject")),
            )
            .order_by(audit.c.seq)
        )
        return [StoredVote(r.actor, r.role, r.event, r.on_behalf_of) for r in rows]

    def least_loaded(self, members: Sequence[str]) -> str | None:
        """The member with the fewest open cases assigned, ties broken by the order given."""
        if not members:
            return None
        counts: dict[str, int] = dict(self._conn.execute(_OPEN_LOAD, {"w_members": list(members)}).all())
        return min(members, key=lambda m: int(counts.get(m, 0)))

    def org_hash(self) -> str | None:
        """The content hash of the deployed org (None when none is)."""
        found = self._conn.execute(_LATEST_ORG_HASH).scalar()
        return None if found is None else str(found)

    def org(self) -> OrgRow | None:
        """The deployed org, as `Store.org` reads it."""
        return _org_row(self._conn)

    def delegations(self, delegate: str) -> list[DelegationRow]:
        """Grants to `delegate` not revoked, newest first, as `Store.delegations(delegate=...)` reads them."""
        return [_delegation_row(r) for r in self._conn.execute(_GRANTS_TO, {"w_delegate": delegate})]


class Store:
    """sopflow's database. Open one per process; it is safe to share between threads."""

    def __init__(self, url: str, *, durable: bool = True, create: bool = True) -> None:
        self.url = url
        self.engine: Engine = database.create(url, durable=durable)
        if create:
            database.ensure_schema(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def upgrade(self) -> str:
        return database.upgrade(self.engine)

    # -- definitions and the org -------------------------------------------------------------------

    def deploy(self, org: OrgRow | None, rows: Sequence[DefinitionRow]) -> tuple[bool, dict[str, bool]]:
        """Store the org (when it changed) and every definition version in one transaction: all or
        nothing. Identical content is a no-op (False); different content under a deployed id and
        version is a `Conflict` naming every clash, and nothing is stored."""
        with self._write() as conn, conn.begin():
            existing = {
                (r.definition_id, r.version): r.content_hash
                for r in conn.execute(
                    select(definitions.c.definition_id, definitions.c.version, definitions.c.content_hash)
                )
            }
            clashes = [
                f"{r.definition_id}@{r.version}"
                for r in rows
                if existing.get((r.definition_id, r.version), r.content_hash) != r.content_hash
            ]
            if clashes:
                raise Conflict(
                    f"{', '.join(clashes)} already deployed with different content; nothing was deployed",
                    hint="bump `version:` in the YAML file; cases keep the version they started on",
                )
            new = {
                f"{r.definition_id}@{r.version}": (r.definition_id, r.version) not in existing for r in rows
            }
            fresh = [r for r in rows if (r.definition_id, r.version) not in existing]
            if fresh:
                conn.execute(insert(definitions), [_fields(r) for r in fresh])
            org_changed = False
            if org is not None:
                current = conn.execute(
                    select(orgs.c.content_hash).order_by(orgs.c.id.desc()).limit(1)
                ).scalar()
                if current != org.content_hash:
                    conn.execute(insert(orgs).values(**_fields(org)))
                    org_changed = True
            return org_changed, new

    def definition(self, definition_id: str, version: int | None = None) -> DefinitionRow | None:
        """One deployed version, or the newest when `version` is None."""
        query = select(definitions).where(definitions.c.definition_id == definition_id)
        if version is not None:
            query = query.where(definitions.c.version == version)
        with self._read() as conn:
            row = conn.execute(query.order_by(definitions.c.version.desc()).limit(1)).first()
        return None if row is None else DefinitionRow(**row._mapping)

    def definitions(self) -> list[DefinitionRow]:
        with self._read() as conn:
            rows = conn.execute(
                select(definitions).order_by(definitions.c.definition_id, definitions.c.version)
            )
            return [DefinitionRow(**r._mapping) for r in rows]

    def org(self) -> OrgRow | None:
        with self._read() as conn:
            return _org_row(conn)

    # -- cases -------------------------------------------------------------------------------------

    def start(
        self,
        definition_id: str,
        definition_version: int,
        starter: str,
        now: datetime,
        change: CaseChange,
        make_write: Callable[[int], Write],
        key: str | None = None,
    ) -> Fired:
        """Create a case and its first audit record. With `key`, a repeated start returns the case
        the first one created."""
        try:
            with self._write() as conn, conn.begin():
                if key is not None:
                    found = self._started(conn, definition_id, key)
                    if found is not None:
                        return found
                case_id = conn.execute(
                    insert(cases)
                    .values(
                        definition_id=definition_id,
                        definition_version=definition_version,
                        state=change.state,
                        open=change.open,
                        data=canonical_json(change.data),
                        version=1,
                        starter=starter,
                        assignee=change.assignee,
                        submitter=change.submitter,
                        entered_seq=1,
                        entered_at=now,
                        created_at=now,
                        updated_at=now,
                        audit_seq=0,
                        last_hash=GENESIS,
                        start_key=key,
                    )
                    .returning(cases.c.id)
                ).scalar_one()
                write = make_write(int(case_id))
                conn.execute(
                    update(cases)
                    .where(cases.c.id == case_id)
                    .values(audit_seq=write.record.seq, last_hash=write.record.hash)
                )
                self._append(conn, write, now)
                row = self._case(conn, int(case_id))
                return Fired(row, write.record)
        except IntegrityError:
            if key is None:
                raise
            with self._read() as conn:
                found = self._started(conn, definition_id, key)
            if found is None:
                raise
            return found

    def _started(self, conn: Connection, definition_id: str, key: str) -> Fired | None:
        case_id = conn.execute(
            select(cases.c.id).where(cases.c.definition_id == definition_id, cases.c.start_key == key)
        ).scalar()
        if case_id is None:
            return None
        return Fired(self._case(conn, case_id), self._record(conn, case_id, 1), replayed=True)

    def fire(
        self,
        case_id: int,
        decide: Callable[[CaseRow, Reads], Write],
        *,
        now: datetime,
        key: str | None = None,
    ) -> Fired:
        """Read the case, decide, and write the step (or the refusal) in one transaction."""
        for _attempt in range(MAX_ATTEMPTS):
            with self._write() as conn:
                tx = conn.begin()
                try:
                    row = self._case(conn, case_id)
                    if key is not None:
                        seq = conn.execute(_FIRE_KEY_SEQ, {"w_case_id": case_id, "w_key": key}).scalar()
                        if seq is not None:
                            tx.rollback()
                            return Fired(row, self._record(conn, case_id, seq), replayed=True)
                    write = decide(row, Reads(conn))
                    if not self._update(conn, row, write, now):
                        tx.rollback()
                        continue
                    self._append(conn, write, now)
                    if key is not None and write.change is not None:
                        conn.execute(
                            _INSERT_FIRE_KEY, {"case_id": case_id, "key": key, "seq": write.record.seq}
                        )
                    after = self._case(conn, case_id)
                    tx.commit()
                    return Fired(after, write.record)
                except IntegrityError:
                    tx.rollback()
                    continue
                except BaseException:
                    if tx.is_active:
                        tx.rollback()
                    raise
        raise Conflict(
            f"case {case_id} kept changing while the step was being written",
            hint="try again; if it persists, check for a runaway script",
        )

    def _update(self, conn: Connection, row: CaseRow, write: Write, now: datetime) -> bool:
        values: dict[str, Any] = {
            "w_case_id": row.id,
            "w_version": row.version,
            "w_audit_seq": row.audit_seq,
            "audit_seq": write.record.seq,
            "last_hash": write.record.hash,
        }
        change = write.change
        if change is not None:
            values.update(
                state=change.state,
                open=change.open,
                data=canonical_json(change.data),
                assignee=change.assignee,
                submitter=change.submitter,
                updated_at=now,
            )
            if change.entered:
                values.update(entered_seq=write.record.seq, entered_at=now)
        result = conn.execute(_UPDATE_CHAIN if change is None else _UPDATE_STEP, values)
        return result.rowcount == 1

    def _append(self, conn: Connection, write: Write, now: datetime) -> None:
        rec = write.record
        conn.execute(_INSERT_AUDIT, _record_values(rec))
        names = list(write.cancel_timers)
        if write.cancel_state_timers or names:
            cancel = (
                _CANCEL_BOTH
                if write.cancel_state_timers and names
                else (_CANCEL_NAMED if names else _CANCEL_TIMEOUTS)
            )
            conn.execute(cancel, {"w_case_id": rec.case_id, "w_names": names, "done_at": now})
        if names:
            # A breached deadline stays overdue until its span ends; then it is closed, late.
            conn.execute(_CLOSE_BREACHED, {"w_case_id": rec.case_id, "w_names": names})
        if write.notify:
            conn.execute(
                _INSERT_NOTIFICATIONS,
                [
                    {
                        "case_id": rec.case_id,
                        "channel": n.channel,
                        "recipient": n.recipient,
                        "subject": n.subject,
                        "body": canonical_json(dict(n.body)),
                        "created_at": now,
                        "attempts": 0,
                        "next_attempt_at": now,
                    }
                    for n in write.notify
                ],
            )
        starting = list(write.start_timers)
        if any(t.kind == "deadline" for t in starting):
            running = set(conn.execute(_RUNNING_DEADLINES, {"w_case_id": rec.case_id}).scalars())
            # Re-entering a span's first state while it runs does not restart its clock.
            starting = [t for t in starting if t.kind != "deadline" or t.name not in running]
        if starting:
            conn.execute(
                _INSERT_TIMERS,
                [
                    {
                        "case_id": rec.case_id,
                        "kind": t.kind,
                        "name": t.name,
                        "rung": t.rung,
                        "due_at": t.due_at,
                        "pending": True,
                        "entered_seq": rec.seq,
                    }
                    for t in starting
                ],
            )

    # -- timers and the outbox ---------------------------------------------------------------------

    def claim_timers(self, now: datetime, owner: str, lease: timedelta, limit: int) -> list[TimerRow]:
        """Lease up to `limit` due timers to `owner`. Rows another worker holds are skipped (PostgreSQL:
        FOR UPDATE SKIP LOCKED; SQLite: the write lock); a lease that expires frees the timer again."""
        with self._write() as conn, conn.begin():
            query = (
                select(timers.c.id)
                .where(
                    timers.c.pending.is_(True),
                    timers.c.due_at <= now,
                    or_(timers.c.lease_until.is_(None), timers.c.lease_until < now),
                )
                .order_by(timers.c.due_at, timers.c.id)
                .limit(limit)
            )
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(conn.execute(query).scalars())
            if not ids:
                return []
            conn.execute(
                update(timers).where(timers.c.id.in_(ids)).values(lease_owner=owner, lease_until=now + lease)
            )
            rows = conn.execute(
                select(*_TIMER_COLUMNS).where(timers.c.id.in_(ids)).order_by(timers.c.due_at, timers.c.id)
            )
            return [TimerRow(**r._mapping) for r in rows]

    def fire_timer(
        self,
        timer: TimerRow,
        owner: str,
        decide: Callable[[CaseRow, Reads], Write | None],
        *,
        now: datetime,
        outcome: str,
    ) -> Fired | None:
        """Apply a leased timer exactly once: its effect and marking it done commit together. None when
        the timer was no longer this worker's (done, cancelled, or re-leased) or `decide` found it stale."""
        for _attempt in range(MAX_ATTEMPTS):
            with self._write() as conn:
                tx = conn.begin()
                try:
                    query = select(timers.c.id).where(
                        timers.c.id == timer.id, timers.c.pending.is_(True), timers.c.lease_owner == owner
                    )
                    if self.dialect == "postgresql":
                        query = query.with_for_update()
                    if conn.execute(query).scalar() is None:
                        tx.rollback()
                        return None
                    row = self._case(conn, timer.case_id)
                    write = decide(row, Reads(conn))
                    if write is None:
                        self._finish_timer(conn, timer.id, now, "stale")
                        tx.commit()
                        return None
                    if not self._update(conn, row, write, now):
                        tx.rollback()
                        continue
                    self._append(conn, write, now)
                    self._finish_timer(conn, timer.id, now, outcome)
                    after = self._case(conn, timer.case_id)
                    tx.commit()
                    return Fired(after, write.record)
                except BaseException:
                    if tx.is_active:
                        tx.rollback()
                    raise
        raise Conflict(f"case {timer.case_id} kept changing while timer {timer.id} fired")

    @staticmethod
    def _finish_timer(conn: Connection, timer_id: int, now: datetime, outcome: str) -> None:
        conn.execute(
            update(timers)
            .where(timers.c.id == timer_id)
            .values(pending=False, done_at=now, outcome=outcome, lease_owner=None, lease_until=None)
        )

    def next_due(self) -> datetime | None:
        """When the next pending timer falls due (None when nothing is pending)."""
        with self._read() as conn:
            due = conn.execute(select(func.min(timers.c.due_at)).where(timers.c.pending.is_(True))).scalar()
        return due if isinstance(due, datetime) else None

    def overdue(self, limit: int = 50) -> list[OverdueRow]:
        """Breached deadlines whose span has not ended, oldest breach first."""
        with self._read() as conn:
            rows = conn.execute(
                select(
                    timers.c.case_id,
                    timers.c.name,
                    timers.c.due_at,
                    cases.c.definition_id,
                    cases.c.state,
                    cases.c.assignee,
                )
                .join(cases, cases.c.id == timers.c.case_id)
                .where(timers.c.kind == "deadline", timers.c.outcome == "breached")
                .order_by(timers.c.due_at, timers.c.case_id)
                .limit(limit)
            )
            return [OverdueRow(**r._mapping) for r in rows]

    def timer_outcomes(self, case_id: int) -> list[tuple[str, str, int, str | None]]:
        """(kind, name, rung, outcome) of every timer of a case, for tests and `show`."""
        with self._read() as conn:
            rows = conn.execute(
                select(timers.c.kind, timers.c.name, timers.c.rung, timers.c.outcome)
                .where(timers.c.case_id == case_id)
                .order_by(timers.c.id)
            )
            return [(r.kind, r.name, r.rung, r.outcome) for r in rows]

    def claim_notifications(self, now: datetime, lease: timedelta, limit: int) -> list[NotificationRow]:
        """Lease undelivered notifications that are due (their next attempt pushed past the lease)."""
        with self._write() as conn, conn.begin():
            query = (
                select(notifications)
                .where(notifications.c.delivered_at.is_(None), notifications.c.next_attempt_at <= now)
                .order_by(notifications.c.next_attempt_at, notifications.c.id)
                .limit(limit)
            )
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(conn.execute(query))
            if rows:
                conn.execute(
                    update(notifications)
                    .where(notifications.c.id.in_([r.id for r in rows]))
                    .values(next_attempt_at=now + lease)
                )
            return [
                NotificationRow(
                    int(r.id),
                    int(r.case_id),
                    r.channel,
                    r.recipient,
                    r.subject,
                    json.loads(r.body),
                    r.attempts,
                )
                for r in rows
            ]

    def record_delivery(
        self, notification: NotificationRow, now: datetime, ok: bool, detail: str, retry_at: datetime | None
    ) -> None:
        """Log one delivery attempt; a failure schedules the next attempt, nothing is ever dropped."""
        attempt = notification.attempts + 1
        with self._write() as conn, conn.begin():
            conn.execute(
                insert(deliveries).values(
                    notification_id=notification.id, attempt=attempt, at=now, ok=ok, detail=detail
                )
            )
            values: dict[str, Any] = {"attempts": attempt}
            if ok:
                values["delivered_at"] = now
                values["last_error"] = None
            else:
                values["last_error"] = detail
                values["next_attempt_at"] = retry_at or now
            conn.execute(update(notifications).where(notifications.c.id == notification.id).values(**values))

    def notification_log(self, case_id: int) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(
                    notifications.c.id,
                    notifications.c.channel,
                    notifications.c.recipient,
                    notifications.c.subject,
                    notifications.c.attempts,
                    notifications.c.delivered_at,
                    notifications.c.last_error,
                )
                .where(notifications.c.case_id == case_id)
                .order_by(notifications.c.id)
            )
            return [dict(r._mapping) for r in rows]

    def deliveries(self, notification_id: int) -> list[tuple[int, bool, str]]:
        with self._read() as conn:
            rows = conn.execute(
                select(deliveries.c.attempt, deliveries.c.ok, deliveries.c.detail)
                .where(deliveries.c.notification_id == notification_id)
                .order_by(deliveries.c.attempt)
            )
            return [(r.attempt, r.ok, r.detail) for r in rows]

    # -- delegations -------------------------------------------------------------------------------

    def add_delegation(self, row: DelegationRow) -> DelegationRow:
        """Append a grant or a revocation; the table is append-only, so this is its audit trail."""
        values = _fields(row)
        values.pop("id")
        values["roles"] = json.dumps(list(row.roles))
        with self._write() as conn, conn.begin():
            new_id = conn.execute(
                insert(delegations).values(**values).returning(delegations.c.id)
            ).scalar_one()
            return self._delegation(conn, int(new_id))

    def delegation(self, delegation_id: int) -> DelegationRow:
        with self._read() as conn:
            return self._delegation(conn, delegation_id)

    def _delegation(self, conn: Connection, delegation_id: int) -> DelegationRow:
        row = conn.execute(select(delegations).where(delegations.c.id == delegation_id)).first()
        if row is None:
            raise NotFound(
                f"delegation {delegation_id} does not exist", hint="`sopflow delegations` lists them"
            )
        return _delegation_row(row)

    def delegations(self, *, delegate: str | None = None, user: str | None = None) -> list[DelegationRow]:
        """Grants (not revocations) not revoked, newest first; for one delegate, or touching one user."""
        query = _GRANTS
        if delegate is not None:
            query = query.where(delegations.c.delegate == delegate)
        if user is not None:
            query = query.where(or_(delegations.c.delegate == user, delegations.c.delegator == user))
        with self._read() as conn:
            return [_delegation_row(r) for r in conn.execute(query.order_by(delegations.c.id.desc()))]

    # -- reads -------------------------------------------------------------------------------------

    def case(self, case_id: int) -> CaseRow:
        with self._read() as conn:
            return self._case(conn, case_id)

    def _case(self, conn: Connection, case_id: int) -> CaseRow:
        row = conn.execute(_CASE_BY_ID, {"w_case_id": case_id}).first()
        if row is None:
            raise NotFound(f"case {case_id} does not exist", hint="`sopflow list` shows the cases")
        return _case_row(row)

    def cases(self, query: CaseQuery) -> list[CaseRow]:
        """Cases matching `query`, oldest first (or newest first), one page of at most `limit`."""
        conditions = []
        if query.definition_id is not None:
            conditions.append(cases.c.definition_id == query.definition_id)
        if query.state is not None:
            conditions.append(cases.c.state == query.state)
        if query.assignee is not None:
            conditions.append(cases.c.assignee == query.assignee)
        if query.open is not None:
            conditions.append(cases.c.open.is_(query.open))
        if query.created_before is not None:
            conditions.append(cases.c.created_at < query.created_before)
        if query.after_id is not None:
            conditions.append(
                cases.c.id < query.after_id if query.newest_first else cases.c.id > query.after_id
            )
        for name, value in query.data_equals.items():
            conditions.append(self._data_equals(name, value))
        order = (
            (cases.c.created_at.desc(), cases.c.id.desc())
            if query.newest_first
            else (cases.c.created_at, cases.c.id)
        )
        with self._read() as conn:
            rows = conn.execute(select(cases).where(*conditions).order_by(*order).limit(query.limit))
            return [_case_row(r) for r in rows]

    def _data_equals(self, name: str, value: Any) -> Any:
        """A condition: the case's data field `name` equals `value` (JSON equality)."""
        if self.dialect == "sqlite":
            path = f"$.{json.dumps(name)}"
            return func.json_extract(cases.c.data, path) == func.json_extract(
                json.dumps({"v": value}, ensure_ascii=False), "$.v"
            )
        # Imported here: SQLAlchemy's PostgreSQL dialect takes ~35 ms to load, which a command on SQLite
        # should not pay. The JSONB bind type serialises `value` itself.
        from sqlalchemy.dialects.postgresql import JSONB

        return cast(cases.c.data, JSONB)[name] == cast(value, JSONB)

    def iter_case_ids(self, batch: int = 1000) -> Iterator[int]:
        """Every case id, in batches, never holding them all in memory."""
        last = 0
        while True:
            with self._read() as conn:
                ids = list(
                    conn.execute(
                        select(cases.c.id).where(cases.c.id > last).order_by(cases.c.id).limit(batch)
                    ).scalars()
                )
            if not ids:
                return
            yield from ids
            last = ids[-1]

    def count_cases(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(cases)).scalar_one())

    def history(self, case_id: int) -> list[AuditRecord]:
        with self._read() as conn:
            rows = conn.execute(select(audit).where(audit.c.case_id == case_id).order_by(audit.c.seq))
            return [_audit_record(r) for r in rows]

    def least_loaded(self, members: Sequence[str]) -> str | None:
        """The member with the fewest open cases assigned (outside any write transaction)."""
        with self._read() as conn:
            return Reads(conn).least_loaded(members)

    def pending_timers(self, case_id: int) -> list[TimerRow]:
        with self._read() as conn:
            rows = conn.execute(
                select(*_TIMER_COLUMNS)
                .where(
                    timers.c.case_id == case_id,
                    or_(
                        timers.c.pending.is_(True),
                        and_(timers.c.kind == "deadline", timers.c.outcome == "breached"),
                    ),
                )
                .order_by(timers.c.due_at)
            )
            return [TimerRow(**r._mapping) for r in rows]

    def _record(self, conn: Connection, case_id: int, seq: int) -> AuditRecord:
        row = conn.execute(select(audit).where(audit.c.case_id == case_id, audit.c.seq == seq)).one()
        return _audit_record(row)

    # -- transactions ------------------------------------------------------------------------------

    def _write(self) -> database.connect_or_explain:
        return database.connect_or_explain(self.engine, write=True)

    def _read(self) -> database.connect_or_explain:
        return database.connect_or_explain(self.engine)


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


def _org_row(conn: Connection) -> OrgRow | None:
    row = conn.execute(_LATEST_ORG).first()
    return None if row is None else OrgRow(**row._mapping)


def _delegation_row(row: Row[Any]) -> DelegationRow:
    m = dict(row._mapping)
    m["roles"] = tuple(json.loads(m["roles"]))
    m["id"] = int(m["id"])
    m["revokes"] = None if m["revokes"] is None else int(m["revokes"])
    return DelegationRow(**m)


def _case_row(row: Row[Any]) -> CaseRow:
    m = dict(row._mapping)
    m["data"] = json.loads(m["data"])
    m["id"] = int(m["id"])
    return CaseRow(**m)


def _record_values(rec: AuditRecord) -> dict[str, Any]:
    body = rec.body()
    for name in ("payload", "data_change", "detail"):
        body[name] = canonical_json(body[name])
    body["hash"] = rec.hash
    return body


def _audit_record(row: Row[Any]) -> AuditRecord:
    m = dict(row._mapping)
    for name in ("payload", "data_change", "detail"):
        m[name] = json.loads(m[name])
    m["case_id"] = int(m["case_id"])
    return AuditRecord(**m)
