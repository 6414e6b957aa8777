"""The store: every read and write of sopflow's database, each write one transaction.

A step is written by `Store.fire`: read the case, let the caller decide (`decide(row, reads)` returns a
`Write`), then update the case only if its version and audit sequence are still the ones read, append the
audit record, start and cancel timers, remember the idempotency key, commit. If another writer got there
first, the whole transaction is retried from the read (the caller's `decide` sees the new case and may
refuse, e.g. with a `Conflict` when it was told to expect the old version).

The statements of a step, of reading a case and of listing cases are the driver's own SQL
(`engine.store.driver`); the rest is SQLAlchemy Core.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from sopflow.engine.audit import GENESIS, AuditRecord, canonical_json
from sopflow.engine.errors import Conflict, DatabaseUnavailable, NotFound, OutcomeUnknown
from sopflow.engine.store import database
from sopflow.engine.store.access import scope_clause
from sopflow.engine.store.driver import Sql, chunks, decode_json, run, when
from sopflow.engine.store.keys import KeyClaim, KeyUse
from sopflow.engine.store.records import (
    BranchItems,
    CaseChange,
    CaseLink,
    CaseQuery,
    CaseRow,
    DefinitionRow,
    DelegationRow,
    Fired,
    NewCase,
    NotificationRow,
    OrgRow,
    OverdueRow,
    Scope,
    StoredVote,
    TimerRow,
    Write,
)
from sopflow.engine.store.tables import (
    audit,
    branch_items,
    cases,
    definitions,
    delegations,
    deliveries,
    idempotency_keys,
    notifications,
    orgs,
    schedule_periods,
    timers,
)

MAX_ATTEMPTS = 20
_DEFINITION_KEYS = "SELECT definition_id, version FROM definitions ORDER BY definition_id, version"
LiveTimer = tuple[str, str, int, datetime, bool, str | None]
"""A timer as `audit verify` compares it: kind, name, rung, due, pending, outcome."""
KeyOfCase = tuple[str, str, str, str, int]
"""An idempotency key as `audit verify` checks it: key, operation, actor, target, seq."""
MAX_CASCADE = 16
"""How deep one step may reach through linked sub-process cases (the checker refuses cycles)."""
SYSTEM_STARTER = "$system"
"""The starter of a case a schedule started (the definition model's SYSTEM; the store imports no model)."""
MAX_ID = 2**63 - 1
"""The largest row id either database stores (a 64-bit integer): a larger number names nothing, and SQLite
cannot even be asked about it."""
_TIMER_COLUMNS = (
    timers.c.id,
    timers.c.case_id,
    timers.c.kind,
    timers.c.name,
    timers.c.rung,
    timers.c.due_at,
    timers.c.entered_seq,
    timers.c.attempts,
    timers.c.last_error,
)

# Statements off the hot path that a step may still need, built once: building a statement (coercing
# each value into a bound parameter, computing its cache key) costs more than running it.
_INSERT_NOTIFICATIONS = insert(notifications)
_LATEST_ORG = (
    select(orgs.c.org_id, orgs.c.content_hash, orgs.c.source_text, orgs.c.file, orgs.c.deployed_at)
    .order_by(orgs.c.id.desc())
    .limit(1)
)
_GRANTS = select(delegations).where(
    delegations.c.kind == "grant",
    delegations.c.id.not_in(
        select(delegations.c.revokes).where(
            delegations.c.kind == "revoke", delegations.c.revokes.is_not(None)
        )
    ),
)
"""Grants (not revocations) that were not revoked."""


@dataclass(frozen=True, slots=True)
class _StepContext:
    """Read with the case at the start of a step, so that `Reads` answers these without a statement."""

    org_hash: str | None
    delegate: str | None
    any_grant: bool
    """Whether any grant to `delegate` ends after the step's time (only then are grants loaded)."""


class Reads:
    """Reads a `decide` callback may make inside the write transaction."""

    def __init__(self, conn: Connection, sql: Sql, context: _StepContext | None = None) -> None:
        self._conn = conn
        self._sql = sql
        self._context = context
        self.key_clash: KeyUse | None = None
        """The earlier use of the step's idempotency key by another request: `decide` must refuse."""

    def votes(self, case_id: int, since_seq: int) -> list[StoredVote]:
        """Accepted approve/reject records after `since_seq` (the current visit of an approval state)."""
        rows = run(self._conn, self._sql.votes, (case_id, since_seq)).fetchall()
        return [StoredVote(*r) for r in rows]

    def fired(self, case_id: int) -> list[StoredVote]:
        """Every accepted step of the case, in order: who fired which event (for separation of duties
        and what a guard sees as `case.fired_by`), read from the audit trail, not from a mutable column."""
        query = (
            select(audit.c.actor, audit.c.role, audit.c.event, audit.c.on_behalf_of)
            .where(audit.c.case_id == case_id, audit.c.outcome == "accepted")
            .order_by(audit.c.seq)
        )
        return [StoredVote(*r) for r in self._conn.execute(query)]

    def branches(self, case_id: int, since_seq: int) -> dict[str, Any]:
        """Where the branches of a parallel state stand: `detail.branches` of the last accepted record from
        `since_seq` (the record that entered the state) that carries it; {} when none does."""
        query = (
            select(audit.c.detail)
            .where(audit.c.case_id == case_id, audit.c.seq >= since_seq, audit.c.outcome == "accepted")
            .order_by(audit.c.seq.desc())
        )
        # Almost always the last accepted record carries them: read one row, and more only when not.
        for limit in (1, None):
            for (text,) in self._conn.execute(query.limit(limit)):
                found = json.loads(text).get("branches")
                if isinstance(found, dict):
                    return found
        return {}

    def lingering(self, case_id: int) -> dict[str, Any]:
        """Branches that run on after their join: `detail.lingering` of the case's last accepted record
        that carries it ({} when none does)."""
        query = (
            select(audit.c.detail)
            .where(audit.c.case_id == case_id, audit.c.outcome == "accepted")
            .order_by(audit.c.seq.desc())
        )
        for (text,) in self._conn.execute(query):
            found = json.loads(text).get("lingering")
            if isinstance(found, dict):
                return found
        return {}

    def last_turn(self, definition_id: str, state: str) -> str | None:
        """The member a round-robin state of a definition last gave a case to (None: nobody yet)."""
        query = "SELECT assignee FROM assignment_turns WHERE definition_id = ? AND state = ?"
        # Locked on PostgreSQL: two steps giving out turns of the same state take them one after the other.
        query += " FOR UPDATE" if self._sql.postgres else ""
        found = run(self._conn, self._sql.text(query), (definition_id, state)).fetchone()
        return str(found[0]) if found is not None else None

    def open_cases(self, user: str) -> int:
        """How many open cases are assigned to `user` (their work in progress)."""
        found = run(self._conn, self._sql.open_load(1), (True, user, True, user)).fetchall()
        return int(found[0][1]) if found else 0

    def least_loaded(self, members: Sequence[str]) -> str | None:
        """The member with the fewest open cases assigned, ties broken by the order given."""
        if not members:
            return None
        params = (True, *members, True, *members)
        found = run(self._conn, self._sql.open_load(len(members)), params).fetchall()
        counts: dict[str, int] = {m: int(n) for m, n in found}
        return min(members, key=lambda m: counts.get(m, 0))

    def org_hash(self) -> str | None:
        """The content hash of the deployed org (None when none is)."""
        if self._context is not None:
            return self._context.org_hash
        found = run(self._conn, self._sql.org_hash).fetchone()
        return None if found is None else str(found[0])

    def org(self) -> OrgRow | None:
        """The deployed org, as `Store.org` reads it."""
        return _org_row(self._conn)

    def record_at(self, case_id: int, seq: int) -> str | None:
        """When the case's audit record `seq` was written (ISO 8601, as recorded); None if there is none."""
        found = self._conn.execute(
            select(audit.c.at).where(audit.c.case_id == case_id, audit.c.seq == seq)
        ).scalar()
        return None if found is None else str(found)

    def definition(self, definition_id: str, version: int | None = None) -> DefinitionRow | None:
        """A deployed definition version (the newest when `version` is None), read in the transaction."""
        query = select(definitions).where(definitions.c.definition_id == definition_id)
        if version is not None:
            query = query.where(definitions.c.version == version)
        row = self._conn.execute(query.order_by(definitions.c.version.desc()).limit(1)).first()
        return None if row is None else DefinitionRow(**row._mapping)

    def definition_keys(self) -> list[tuple[str, int]]:
        """(definition id, version) of every deployed version, as `Store.definition_keys` reads them."""
        found = run(self._conn, self._sql.text(_DEFINITION_KEYS)).fetchall()
        return [(str(r[0]), int(r[1])) for r in found]

    def parent_link(self, case_id: int) -> tuple[int, int] | None:
        """(parent case, the parent's record that started it) of a sub-process's child; None otherwise."""
        found = self._conn.execute(
            select(cases.c.parent_case_id, cases.c.parent_seq).where(cases.c.id == case_id)
        ).first()
        if found is None or found[0] is None:
            return None
        return int(found[0]), int(found[1])

    def delegations(self, delegate: str) -> list[DelegationRow]:
        """Grants to `delegate` not revoked, newest first, as `Store.delegations(delegate=...)` reads them;
        [] without a statement when the step's read found no grant to them that runs past the step's
        time (a grant that has ended hands nothing over)."""
        context = self._context
        if context is not None and context.delegate == delegate and not context.any_grant:
            return []
        query = _GRANTS.where(delegations.c.delegate == delegate).order_by(delegations.c.id.desc())
        return [_delegation_row(r) for r in self._conn.execute(query)]


class Store:
    """sopflow's database. Open one per process; it is safe to share between threads."""

    def __init__(self, url: str, *, durable: bool = True, create: bool = True) -> None:
        self.url = url
        self.engine: Engine = database.create(url, durable=durable)
        self._sql = Sql.of(self.engine.dialect.name)
        self._writer = database.WriteConnection(self.engine)
        if create:
            database.ensure_schema(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self._writer.close()
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
        if version is not None and not 0 < version <= MAX_ID:
            return None
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

    def definition_keys(self) -> list[tuple[str, int]]:
        """(definition id, version) of every deployed version, in `definitions()` order."""
        with self._read() as conn:
            rows = conn.execute(
                select(definitions.c.definition_id, definitions.c.version).order_by(
                    definitions.c.definition_id, definitions.c.version
                )
            )
            return [(r.definition_id, int(r.version)) for r in rows]

    def org(self) -> OrgRow | None:
        with self._read() as conn:
            return _org_row(conn)

    # -- cases -------------------------------------------------------------------------------------

    def links(self, case_id: int) -> tuple[CaseLink | None, list[CaseLink]]:
        """A case's sub-process links: itself as its parent's child (None: nobody started it so), and the
        children it started, oldest first."""
        c = cases.c
        columns = (c.id, c.parent_case_id, c.parent_seq, c.definition_id, c.state, c.open)
        # One statement (the primary key and ix_cases_parent): `audit verify` asks it of every case.
        query = select(*columns).where(or_(c.id == case_id, c.parent_case_id == case_id)).order_by(c.id)
        with self._read() as conn:
            rows = [_link(r) for r in conn.execute(query) if r[1] is not None]
        parent = next((r for r in rows if r.case_id == case_id), None)
        return parent, [r for r in rows if r.parent_case_id == case_id and r.case_id != case_id]

    def start(
        self,
        definition_id: str,
        definition_version: int,
        starter: str,
        now: datetime,
        change: CaseChange,
        make_write: Callable[[int], Write],
        key: KeyClaim | None = None,
    ) -> Fired:
        """Create a case and its first audit record in one transaction, with its idempotency `key`: the
        same request again returns the case the first one created (`replayed`); the key used by another
        request raises the Conflict `key.conflict` describes. A COMMIT whose outcome is unknown raises
        `OutcomeUnknown`."""
        sql = self._sql
        stamp = sql.time(now)
        data = canonical_json(change.data)
        for _attempt in range(MAX_ATTEMPTS):
            with self._write() as conn:
                tx = database.StepTransaction(conn)
                try:
                    if key is not None:
                        found = run(conn, sql.key_use, (key.key,)).fetchone()
                        if found is not None:
                            replayed = self._replay(conn, key, _key_use(key.key, found))
                            tx.rollback()
                            return replayed
                    values = (
                        definition_id, definition_version, change.state, change.open, data, 1, starter,
                        change.assignee, change.submitter, 1, stamp, stamp, stamp, 0, GENESIS,
                        None if key is None else key.key,
                    )  # fmt: skip
                    case_id = int(run(conn, sql.insert_case, values).fetchall()[0][0])
                    write = make_write(case_id)
                    if key is not None:
                        write = replace(write, key=key)
                    run(conn, sql.seal_case, (write.record.seq, write.record.hash, case_id))
                    self._append(conn, write, now, stamp)
                    if write.branch_items is not None:
                        self._branch_items(conn, case_id, write.record.seq, write.branch_items)
                    if not self._cascade(conn, write, now, stamp):
                        tx.rollback()
                        continue
                    tx.commit()
                except IntegrityError:
                    # Another writer stored the same key first (PostgreSQL; SQLite's write lock queues
                    # the two): read again, and find its use.
                    tx.rollback()
                    if key is None:
                        raise
                    continue
                except BaseException:
                    if tx.active:
                        tx.rollback()
                    raise
            at = now.astimezone(UTC)
            row = CaseRow(
                case_id, definition_id, definition_version, change.state, change.open, json.loads(data), 1,
                starter, change.assignee, change.submitter, 1, at, at, at, write.record.seq,
                write.record.hash, None if key is None else key.key,
            )  # fmt: skip
            return Fired(row, write.record)
        raise Conflict(
            f"idempotency key `{key.key if key else ''}` kept being written by another start",
            hint="try again with the same key",
        )

    def _replay(self, conn: Connection, key: KeyClaim, use: KeyUse) -> Fired:
        """The first result of `key`'s request, repeated; the Conflict of another request's key."""
        if not key.same_request(use):
            raise key.conflict(use)
        return Fired(self._case(conn, use.case_id), self._record(conn, use.case_id, use.seq), replayed=True)

    def fire(
        self,
        case_id: int,
        decide: Callable[[CaseRow, Reads], Write],
        *,
        now: datetime,
        key: KeyClaim | None = None,
        actor: str | None = None,
    ) -> Fired:
        """Read the case, decide, and write the step (or the refusal) in one transaction. With `actor`,
        the read also finds out whether any delegation to them may run at `now`, so that
        `Reads.delegations(actor)` costs a statement only when one does.

        With an idempotency `key`: the same request again returns its first result (`replayed`) and
        writes nothing; the key used by another request is put in `Reads.key_clash` for `decide` to
        refuse (recorded on this case). An accepted step stores the key with its record. A COMMIT whose
        outcome is unknown raises `OutcomeUnknown`."""
        stamp = self._sql.time(now)
        for _attempt in range(MAX_ATTEMPTS):
            with self._write() as conn:
                tx = database.StepTransaction(conn)
                try:
                    row, reads, use = self._step_read(
                        conn, case_id, stamp, actor=actor, key=None if key is None else key.key
                    )
                    if key is not None and use is not None:
                        if key.same_request(use):
                            replayed = Fired(row, self._record(conn, use.case_id, use.seq), replayed=True)
                            tx.rollback()
                            return replayed
                        reads.key_clash = use
                    write = decide(row, reads)
                    if key is not None and write.change is not None:
                        if use is not None:  # `decide` must refuse a clash; never let one through
                            raise key.conflict(use)
                        write = replace(write, key=key)
                    after = self._write_step(conn, row, write, now, stamp)
                    if after is None or not self._cascade(conn, write, now, stamp):
                        tx.rollback()
                        continue
                    tx.commit()
                    return Fired(after, write.record)
                except OperationalError as exc:
                    if tx.active:
                        tx.rollback()
                    if _deadlock(exc):  # two steps on linked cases crossed: the server undid this one
                        continue
                    raise
                except IntegrityError:
                    tx.rollback()
                    continue
                except BaseException:
                    if tx.active:
                        tx.rollback()
                    raise
        raise Conflict(
            f"case {case_id} kept changing while the step was being written",
            hint="try again; if it persists, check for a runaway script",
        )

    def _step_read(
        self,
        conn: Connection,
        case_id: int,
        stamp: Any,
        *,
        actor: str | None = None,
        key: str | None = None,
    ) -> tuple[CaseRow, Reads, KeyUse | None]:
        """The case, the `Reads` of its step (knowing the org's hash and whether `actor` may hold a
        delegation at `stamp`, the step's time as the driver binds it), and the earlier use of the
        idempotency `key` (None: not used yet) — one statement."""
        found = None
        if 0 < case_id <= MAX_ID:
            found = run(conn, self._sql.step_read, (actor, stamp, key, case_id)).fetchone()
        if found is None:
            raise NotFound(f"case {case_id} does not exist", hint="`sopflow list` shows the cases")
        width = len(CaseRow.__slots__)
        context = _StepContext(found[width], actor, bool(found[width + 1]))
        use = None if key is None or found[width + 2] is None else _key_use(key, found[width + 2 :])
        return self._sql.case_row(found), Reads(conn, self._sql, context), use

    def _write_step(
        self, conn: Connection, row: CaseRow, write: Write, now: datetime, stamp: Any
    ) -> CaseRow | None:
        """Update the case if it is still as read, and append the step; the case as now stored (built
        here, not read back), or None when another writer changed it first. `stamp` is `now` as the
        driver binds it."""
        sql = self._sql
        rec = write.record
        change = write.change
        chain = (rec.seq, rec.hash, row.id, row.version, row.audit_seq)
        update: str
        params: Sequence[Any]
        if change is None:
            update, params = sql.update_chain, chain
            after = CaseRow(
                row.id, row.definition_id, row.definition_version, row.state, row.open, row.data, row.version,
                row.starter, row.assignee, row.submitter, row.entered_seq, row.entered_at, row.created_at,
                row.updated_at, rec.seq, rec.hash, row.start_key,
            )  # fmt: skip
        else:
            data = canonical_json(change.data)
            head = (change.state, change.open, data, change.assignee, change.submitter, stamp)
            if change.entered:
                update, params = sql.update_step_entered, (*head, rec.seq, stamp, *chain)
            else:
                update, params = sql.update_step, (*head, *chain)
            at = now.astimezone(UTC)
            after = CaseRow(
                row.id, row.definition_id, row.definition_version, change.state, change.open,
                decode_json(data), row.version + 1, row.starter, change.assignee, change.submitter,
                rec.seq if change.entered else row.entered_seq, at if change.entered else row.entered_at,
                row.created_at, at, rec.seq, rec.hash, row.start_key,
            )  # fmt: skip
        if not self._write_after(conn, update, params, write, now, stamp):
            return None
        if write.branch_items is not None:
            self._branch_items(conn, row.id, after.entered_seq, write.branch_items)
        return after

    @staticmethod
    def _branch_items(conn: Connection, case_id: int, entered_seq: int, items: BranchItems) -> None:
        """Rewrite the rows of the branches the step changed (all of the case's when it gave every one)."""
        gone = delete(branch_items).where(branch_items.c.case_id == case_id)
        if not items.every:
            gone = gone.where(branch_items.c.branch.in_(list(items.holders)))
        conn.execute(gone)
        seq = 0 if items.after_join else entered_seq
        rows = [
            {"case_id": case_id, "branch": b, "entered_seq": seq, "assignee": a}
            for b, a in items.holders.items()
            if a is not None
        ]
        if rows:
            conn.execute(insert(branch_items), rows)

    def _write_after(
        self, conn: Connection, update: str, params: Sequence[Any], write: Write, now: datetime, stamp: Any
    ) -> bool:
        """Run the case `update` and, if it matched the case as read, what the step writes after it;
        False (nothing written) when another writer changed the case first. On PostgreSQL the update, the
        audit record and the timers go as one statement: each statement is a round trip to the server,
        and a step's time there is mostly round trips."""
        sql = self._sql
        if not sql.postgres:
            if run(conn, update, params).rowcount != 1:
                return False
            self._append(conn, write, now, stamp)
            return True
        # A deadline's start checks that its span is not running already, and must see a cancel in the
        # same step (a step that ends a span and enters its first state again): then it goes apart.
        apart = any(t.kind == "deadline" for t in write.start_timers) and bool(
            write.cancel_state_timers or write.cancel_timers
        )
        inside = sql.step_statements(write, stamp, after_update=True, start=not apart)
        text, values = sql.together(update, params, inside)
        if run(conn, text, values).fetchone()[0] != 1:
            return False
        if apart:
            run(conn, *sql.start_timers(write.record.case_id, write.record.seq, write.start_timers))
        self._notify(conn, write, now)
        return True

    def _cascade(self, conn: Connection, write: Write, now: datetime, stamp: Any, depth: int = 0) -> bool:
        """Write what `write` does to linked cases (sub-processes), in the same transaction: close the
        case's open children, start its child, resume its parent; and what each of those does in turn.
        False when a linked case changed since it was read: the caller rolls back and tries again."""
        cascade = write.cascade
        if cascade is None:
            return True
        if depth > MAX_CASCADE:
            raise Conflict(
                f"case {write.record.case_id}: sub-processes linked more than {MAX_CASCADE} deep in one step",
                hint="a chain of sub-processes this long is a mistake of the definitions",
            )
        case_id = write.record.case_id
        follow: list[tuple[int, Callable[[CaseRow, Reads], Write | None]]] = []
        if cascade.close_children is not None:
            query = select(cases.c.id).where(cases.c.parent_case_id == case_id, cases.c.open.is_(True))
            found = conn.execute(query.order_by(cases.c.id)).scalars()
            follow += [(int(c), cascade.close_children) for c in found]
        for other_id, decide in follow:
            if not self._follow(conn, other_id, decide, now, stamp, depth):
                return False
        if cascade.start_child is not None:
            child = cascade.start_child(Reads(conn, self._sql))
            self._start_child(conn, child, case_id, write.record.seq, now, stamp, depth)
        if cascade.resume_parent is not None:
            link = Reads(conn, self._sql).parent_link(case_id)
            if link is not None and not self._follow(conn, link[0], cascade.resume_parent, now, stamp, depth):
                return False
        return True

    def _follow(
        self,
        conn: Connection,
        case_id: int,
        decide: Callable[[CaseRow, Reads], Write | None],
        now: datetime,
        stamp: Any,
        depth: int,
    ) -> bool:
        row, reads, _ = self._step_read(conn, case_id, stamp)
        write = decide(row, reads)
        if write is None:
            return True
        if self._write_step(conn, row, write, now, stamp) is None:
            return False
        return self._cascade(conn, write, now, stamp, depth + 1)

    def _start_child(
        self,
        conn: Connection,
        child: NewCase,
        parent: int,
        parent_seq: int,
        now: datetime,
        stamp: Any,
        depth: int,
    ) -> None:
        sql = self._sql
        change = child.change
        values = (
            child.definition_id, child.definition_version, change.state, change.open,
            canonical_json(change.data), 1, child.starter, change.assignee, change.submitter, 1, stamp, stamp,
            stamp, 0, GENESIS, None,
        )  # fmt: skip
        child_id = int(run(conn, sql.insert_case, values).fetchall()[0][0])
        conn.execute(
            update(cases).where(cases.c.id == child_id).values(parent_case_id=parent, parent_seq=parent_seq)
        )
        write = child.make_write(child_id)
        run(conn, sql.seal_case, (write.record.seq, write.record.hash, child_id))
        self._append(conn, write, now, stamp)
        if not self._cascade(conn, write, now, stamp, depth + 1):
            raise Conflict(f"case {child_id} changed while it was being started")

    def _append(self, conn: Connection, write: Write, now: datetime, stamp: Any) -> None:
        """The audit record, the timers the step cancels and starts, its notifications; `stamp` is `now`
        as the driver binds it."""
        for text, values in self._sql.step_statements(write, stamp):
            run(conn, text, values)
        self._notify(conn, write, now)

    @staticmethod
    def _notify(conn: Connection, write: Write, now: datetime) -> None:
        if write.notify:
            conn.execute(
                _INSERT_NOTIFICATIONS,
                [
                    {
                        "case_id": write.record.case_id,
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

    # -- schedules ---------------------------------------------------------------------------------

    def started_periods(
        self, definition_id: str, schedule: str, since: datetime, until: datetime | None = None
    ) -> set[datetime]:
        """The periods of a definition's schedule started so far, after `since` (and up to `until`)."""
        sp = schedule_periods.c
        query = select(sp.period).where(
            sp.definition_id == definition_id, sp.schedule == schedule, sp.period > since
        )
        if until is not None:
            query = query.where(sp.period <= until)
        with self._read() as conn:
            return {p.astimezone(UTC) for p in conn.execute(query).scalars()}

    def last_periods(self, definition_id: str) -> dict[str, tuple[datetime, int, int]]:
        """Per schedule of the definition: its latest period started, that period's case, and how many
        periods it started."""
        sp = schedule_periods.c
        latest = (
            select(sp.schedule, func.max(sp.period).label("period"), func.count().label("n"))
            .where(sp.definition_id == definition_id)
            .group_by(sp.schedule)
            .subquery()
        )
        query = select(latest.c.schedule, latest.c.period, sp.case_id, latest.c.n).join(
            schedule_periods,
            and_(
                sp.definition_id == definition_id,
                sp.schedule == latest.c.schedule,
                sp.period == latest.c.period,
            ),
        )
        with self._read() as conn:
            return {
                str(s): (p if p.tzinfo else p.replace(tzinfo=UTC), int(c), int(n))
                for s, p, c, n in conn.execute(query)
            }

    def start_period(
        self,
        definition_id: str,
        definition_version: int,
        schedule: str,
        period: datetime,
        due: datetime,
        now: datetime,
        change: CaseChange,
        make_write: Callable[[int], Write],
    ) -> Fired | None:
        """Start the case of one schedule period and record the period, in one transaction; None (nothing
        written) when the period was started already, or (PostgreSQL) another worker is starting it now.
        The period's row is what makes the start happen once: its primary key refuses a second one."""
        sql = self._sql
        stamp = sql.time(now)
        data = canonical_json(change.data)
        sp = schedule_periods.c
        key = (sp.definition_id == definition_id, sp.schedule == schedule, sp.period == period)
        with self._write() as conn:
            tx = database.StepTransaction(conn)
            try:
                # Another worker holding this period moves on to the next instead of queueing behind it;
                # SQLite's write lock already lets one writer in at a time. One round trip asks both.
                started = select(sp.case_id).where(*key).exists()
                if sql.postgres:
                    lock = func.pg_try_advisory_xact_lock(_period_lock(definition_id, schedule, period))
                    held, done = conn.execute(select(lock, started)).one()
                    free = bool(held) and not done
                else:
                    free = not conn.execute(select(started)).scalar()
                if not free:
                    tx.rollback()
                    return None
                values = (
                    definition_id, definition_version, change.state, change.open, data, 1, SYSTEM_STARTER,
                    change.assignee, change.submitter, 1, stamp, stamp, stamp, 0, GENESIS, None,
                )  # fmt: skip
                case_id = int(run(conn, sql.insert_case, values).fetchall()[0][0])
                write = make_write(case_id)
                run(conn, sql.seal_case, (write.record.seq, write.record.hash, case_id))
                self._append(conn, write, now, stamp)
                conn.execute(
                    insert(schedule_periods).values(
                        definition_id=definition_id,
                        schedule=schedule,
                        period=period,
                        due_at=due,
                        case_id=case_id,
                        started_at=now,
                    )
                )
                tx.commit()
            except IntegrityError:
                # The period's row was written first by another worker (its key refused ours).
                if tx.active:
                    tx.rollback()
                return None
            except BaseException:
                if tx.active:
                    tx.rollback()
                raise
        at = now.astimezone(UTC)
        row = CaseRow(
            case_id, definition_id, definition_version, change.state, change.open, json.loads(data), 1,
            SYSTEM_STARTER, change.assignee, change.submitter, 1, at, at, at, write.record.seq,
            write.record.hash, None,
        )  # fmt: skip
        return Fired(row, write.record)

    # -- timers and the outbox ---------------------------------------------------------------------

    def claim_timers(
        self, now: datetime, owner: str, lease: timedelta, limit: int, *, at: datetime | None = None
    ) -> list[TimerRow]:
        """Lease up to `limit` timers due at `now` to `owner`, until `at` (the time of the claim, default
        `now`) plus `lease`. Rows another worker holds are skipped (PostgreSQL: FOR UPDATE SKIP LOCKED;
        SQLite: the write lock); a lease that expires frees the timer again."""
        moment = now if at is None else at
        with self._write() as conn, conn.begin():
            query = (
                select(timers.c.id)
                .where(
                    timers.c.pending.is_(True),
                    timers.c.due_at <= now,
                    or_(timers.c.lease_until.is_(None), timers.c.lease_until < moment),
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
                update(timers)
                .where(timers.c.id.in_(ids))
                .values(lease_owner=owner, lease_until=moment + lease)
            )
            rows = conn.execute(
                select(*_TIMER_COLUMNS).where(timers.c.id.in_(ids)).order_by(timers.c.due_at, timers.c.id)
            )
            return [TimerRow(**r._mapping) for r in rows]

    def note_attempt(
        self, timer: TimerRow, owner: str, attempts: int, error: str, lease_until: datetime
    ) -> bool:
        """Keep a failed try of an automatic state's work with its timer: the tries so far and the last
        error, and the lease renewed to `lease_until`. False (nothing written) when `owner` no longer
        holds the timer's lease, or the timer has fired: then another worker has the work."""
        with self._write() as conn, conn.begin():
            done = conn.execute(
                update(timers)
                .where(timers.c.id == timer.id, timers.c.lease_owner == owner, timers.c.pending.is_(True))
                .values(attempts=attempts, last_error=error, lease_until=lease_until)
            )
            return bool(done.rowcount)

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
        stamp = self._sql.time(now)
        for _attempt in range(MAX_ATTEMPTS):
            with self._write() as conn:
                tx = database.StepTransaction(conn)
                try:
                    if run(conn, self._sql.lock_timer, (timer.id, True, owner)).fetchone() is None:
                        tx.rollback()
                        return None
                    row, reads, _ = self._step_read(conn, timer.case_id, stamp)
                    write = decide(row, reads)
                    if write is None:
                        self._finish_timer(conn, timer.id, stamp, "stale")
                        tx.commit()
                        return None
                    after = self._write_step(conn, row, write, now, stamp)
                    if after is None or not self._cascade(conn, write, now, stamp):
                        tx.rollback()
                        continue
                    self._finish_timer(conn, timer.id, stamp, outcome)
                    tx.commit()
                    return Fired(after, write.record)
                except OperationalError as exc:
                    if tx.active:
                        tx.rollback()
                    if _deadlock(exc):  # two steps on linked cases crossed: the server undid this one
                        continue
                    raise
                except OutcomeUnknown as exc:
                    # The timer's effect and its completion commit together: tried again, it fires at
                    # most once (or finds itself done), so this is an outage to ride out, like any other.
                    raise DatabaseUnavailable(
                        f"timer {timer.id} of case {timer.case_id}: {exc.message}",
                        hint="a worker tries again by itself; the timer fires once",
                    ) from exc
                except BaseException:
                    if tx.active:
                        tx.rollback()
                    raise
        raise Conflict(f"case {timer.case_id} kept changing while timer {timer.id} fired")

    def _finish_timer(self, conn: Connection, timer_id: int, stamp: Any, outcome: str) -> None:
        run(conn, self._sql.finish_timer, (False, stamp, outcome, timer_id))

    def next_due(self) -> datetime | None:
        """When the next pending timer falls due (None when nothing is pending)."""
        with self._read() as conn:
            due = conn.execute(select(func.min(timers.c.due_at)).where(timers.c.pending.is_(True))).scalar()
        return due if isinstance(due, datetime) else None

    def overdue(self, limit: int = 50, scope: Scope | None = None) -> list[OverdueRow]:
        """Breached deadlines whose span has not ended, oldest breach first (of the cases `scope` admits)."""
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
                .where(timers.c.kind == "deadline", timers.c.outcome == "breached", scope_clause(scope))
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

    def claim_notifications(
        self, now: datetime, owner: str, lease: timedelta, limit: int, *, at: datetime | None = None
    ) -> list[NotificationRow]:
        """Lease to `owner` up to `limit` undelivered notifications due at `now` that no one else holds,
        until `at` (the time of the claim, default `now`) plus `lease`. Only the holder of a claim may
        record the delivery (`record_delivery`)."""
        moment = now if at is None else at
        with self._write() as conn, conn.begin():
            query = (
                select(notifications)
                .where(
                    notifications.c.delivered_at.is_(None),
                    notifications.c.next_attempt_at <= now,
                    or_(notifications.c.lease_until.is_(None), notifications.c.lease_until < moment),
                )
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
                    .values(lease_owner=owner, lease_until=moment + lease)
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
        self,
        notification: NotificationRow,
        owner: str,
        at: datetime,
        ok: bool,
        detail: str,
        retry_at: datetime | None,
    ) -> bool:
        """Log one delivery attempt made at `at`, if `owner` still holds the claim on `notification` as
        claimed; a failure schedules the next attempt, nothing is ever dropped. False, and nothing
        written, when the claim was lost: its lease ran out and another worker took the notification over
        (and records its own attempt), or it was delivered meanwhile."""
        attempt = notification.attempts + 1
        values: dict[str, Any] = {"attempts": attempt, "lease_owner": None, "lease_until": None}
        if ok:
            values["delivered_at"] = at
            values["last_error"] = None
        else:
            values["last_error"] = detail
            values["next_attempt_at"] = retry_at or at
        # The claim is checked and released by the same UPDATE that moves the attempt count on, so two
        # workers can never both record the same attempt (PostgreSQL re-checks the row after a wait).
        held = (
            update(notifications)
            .where(
                notifications.c.id == notification.id,
                notifications.c.lease_owner == owner,
                notifications.c.attempts == notification.attempts,
                notifications.c.delivered_at.is_(None),
            )
            .values(**values)
        )
        try:
            with self._write() as conn, conn.begin():
                if conn.execute(held).rowcount != 1:
                    return False  # nothing was written: the (empty) transaction commits
                conn.execute(
                    insert(deliveries).values(
                        notification_id=notification.id, attempt=attempt, at=at, ok=ok, detail=detail
                    )
                )
        except IntegrityError:  # pragma: no cover - the claim check above leaves no way to this
            return False
        return True

    def undelivered(self) -> int:
        """How many notifications wait to be delivered (a worker's backlog)."""
        with self._read() as conn:
            query = select(func.count()).select_from(notifications)
            return int(conn.execute(query.where(notifications.c.delivered_at.is_(None))).scalar_one())

    def release_leases(self, owner: str) -> None:
        """Hand back the timers and notifications leased to `owner` and not done: a worker that stops, or
        comes back after losing its database, lets them go at once instead of when the lease runs out."""
        with self._write() as conn, conn.begin():
            conn.execute(
                update(timers)
                .where(timers.c.pending.is_(True), timers.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
            conn.execute(
                update(notifications)
                .where(notifications.c.delivered_at.is_(None), notifications.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

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
        row = (
            conn.execute(select(delegations).where(delegations.c.id == delegation_id)).first()
            if 0 < delegation_id <= MAX_ID
            else None
        )
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
        row = run(conn, self._sql.case_by_id, (case_id,)).fetchone() if 0 < case_id <= MAX_ID else None
        if row is None:
            raise NotFound(f"case {case_id} does not exist", hint="`sopflow list` shows the cases")
        return self._sql.case_row(row)

    def cases(self, query: CaseQuery) -> list[CaseRow]:
        """Cases matching `query`, oldest first (or newest first), one page of at most `limit`."""
        _check_query(query)
        if query.after_id is not None and not query.newest_first and query.after_id >= MAX_ID:
            return []  # nothing comes after the largest id
        if query.after_id is not None and query.after_id > MAX_ID:
            query = replace(query, after_id=MAX_ID)
        sql, params = self._sql.cases(query)
        with self._read() as conn:
            return [self._sql.case_row(r) for r in run(conn, sql, params).fetchall()]

    def suspended_among(self, case_ids: Sequence[int]) -> set[int]:
        """Those of `case_ids` that are suspended, in a statement per 500."""
        found: set[int] = set()
        with self._read() as conn:
            for ids in chunks(case_ids):
                found |= {int(r[0]) for r in run(conn, self._sql.suspended_among(len(ids)), (*ids, False))}
        return found

    def cases_each(self, queries: Sequence[CaseQuery]) -> list[CaseRow]:
        """The pages of several queries, read in one statement per 100 queries (each query its own
        indexed search); a case matching two of them comes twice."""
        found: list[CaseRow] = []
        with self._read() as conn:
            for start in range(0, len(queries), 100):
                sql, params = self._sql.cases_each(queries[start : start + 100])
                found += [self._sql.case_row(r) for r in run(conn, sql, params).fetchall()]
        return found

    def running_deadlines(self, case_ids: Sequence[int]) -> dict[int, list[TimerRow]]:
        """Each case's running deadline timers (pending, or breached and not yet ended), soonest first;
        as `pending_timers` finds them, for many cases in a statement per 500."""
        found: dict[int, list[TimerRow]] = {}
        with self._read() as conn:
            for ids in chunks(case_ids):
                params = (*ids, True, *ids, False)
                for r in run(conn, self._sql.live_timers(len(ids)), params).fetchall():
                    if r[2] == "deadline":
                        timer = TimerRow(int(r[0]), int(r[1]), r[2], r[3], r[4], when(r[5]), r[6])
                        found.setdefault(timer.case_id, []).append(timer)
        for timers_of_case in found.values():
            timers_of_case.sort(key=lambda t: (t.due_at, t.id))
        return found

    def all_votes(self, case_ids: Sequence[int]) -> dict[int, list[tuple[int, StoredVote]]]:
        """Each case's accepted approve/reject records as (audit seq, vote), in order, for many cases in a
        statement per 500 (`Reads.votes` keeps those of the current visit)."""
        found: dict[int, list[tuple[int, StoredVote]]] = {}
        with self._read() as conn:
            for ids in chunks(case_ids):
                for r in run(conn, self._sql.all_votes(len(ids)), ids).fetchall():
                    found.setdefault(int(r[0]), []).append((int(r[1]), StoredVote(*r[2:])))
        return found

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
        if not 0 < case_id <= MAX_ID:
            return []
        with self._read() as conn:
            rows = conn.execute(select(audit).where(audit.c.case_id == case_id).order_by(audit.c.seq))
            return [_audit_record(r) for r in rows]

    def votes(self, case_id: int, since_seq: int) -> list[StoredVote]:
        """As `Reads.votes`, outside any write transaction."""
        with self._read() as conn:
            return Reads(conn, self._sql).votes(case_id, since_seq)

    def fired(self, case_id: int) -> list[StoredVote]:
        """As `Reads.fired`, outside any write transaction."""
        with self._read() as conn:
            return Reads(conn, self._sql).fired(case_id)

    def branches(self, case_id: int, since_seq: int) -> dict[str, Any]:
        """As `Reads.branches`, outside any write transaction."""
        with self._read() as conn:
            return Reads(conn, self._sql).branches(case_id, since_seq)

    def lingering(self, case_id: int) -> dict[str, Any]:
        """As `Reads.lingering`, outside any write transaction."""
        with self._read() as conn:
            return Reads(conn, self._sql).lingering(case_id)

    def last_turn(self, definition_id: str, state: str) -> str | None:
        """The member a round-robin state last gave a case to (outside any write transaction)."""
        with self._read() as conn:
            return Reads(conn, self._sql).last_turn(definition_id, state)

    def open_cases(self, user: str) -> int:
        """How many open cases are assigned to `user` (outside any write transaction)."""
        with self._read() as conn:
            return Reads(conn, self._sql).open_cases(user)

    def least_loaded(self, members: Sequence[str]) -> str | None:
        """The member with the fewest open cases assigned (outside any write transaction)."""
        with self._read() as conn:
            return Reads(conn, self._sql).least_loaded(members)

    def pending_timers(self, case_id: int) -> list[TimerRow]:
        if not 0 < case_id <= MAX_ID:
            return []
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

    # -- reads for `audit verify` and anchors -------------------------------------------------------

    def org_history(self) -> list[tuple[int, OrgRow]]:
        """Every org ever deployed, as (row id, row), in deployment order."""
        with self._read() as conn:
            rows = conn.execute(
                select(
                    orgs.c.id, orgs.c.org_id, orgs.c.content_hash, orgs.c.source_text, orgs.c.file,
                    orgs.c.deployed_at,
                ).order_by(orgs.c.id)
            )  # fmt: skip
            return [
                (int(r.id), OrgRow(r.org_id, r.content_hash, r.source_text, r.file, r.deployed_at))
                for r in rows
            ]

    def delegation_log(self) -> list[DelegationRow]:
        """Every grant and revocation, oldest first."""
        with self._read() as conn:
            return [_delegation_row(r) for r in conn.execute(select(delegations).order_by(delegations.c.id))]

    def audit_heads(self) -> list[tuple[int, int, str]]:
        """(case id, seq, hash) of the last audit record of every case that has one, by case id: read from
        the trail itself, not from the case rows, in one transaction."""
        last = (
            select(audit.c.case_id, func.max(audit.c.seq).label("seq")).group_by(audit.c.case_id).subquery()
        )
        query = (
            select(audit.c.case_id, audit.c.seq, audit.c.hash)
            .join(last, and_(audit.c.case_id == last.c.case_id, audit.c.seq == last.c.seq))
            .order_by(audit.c.case_id)
        )
        with self._read() as conn, conn.begin():
            return [(int(r.case_id), int(r.seq), str(r.hash)) for r in conn.execute(query)]

    def histories(self, case_ids: Sequence[int]) -> dict[int, list[AuditRecord]]:
        """The audit trails of several cases (as `history` reads one), in one statement: `audit verify`
        reads its cases a batch at a time."""
        query = select(audit).where(audit.c.case_id.in_(list(case_ids)))
        found: dict[int, list[AuditRecord]] = {}
        with self._read() as conn:
            for r in conn.execute(query.order_by(audit.c.case_id, audit.c.seq)):
                record = _audit_record(r)
                found.setdefault(record.case_id, []).append(record)
        return found

    def live_timers(self, case_id: int) -> list[LiveTimer]:
        """(kind, name, rung, due, pending, outcome) of a case's pending timers and breached deadlines."""
        return self.live_timers_of([case_id]).get(case_id, [])

    def live_timers_of(self, case_ids: Sequence[int]) -> dict[int, list[LiveTimer]]:
        """`live_timers` of several cases, in one statement."""
        t = timers.c
        breached = and_(t.kind == "deadline", t.outcome == "breached")
        query = (
            select(t.case_id, t.kind, t.name, t.rung, t.due_at, t.pending, t.outcome)
            .where(t.case_id.in_(list(case_ids)), or_(t.pending.is_(True), breached))
            .order_by(t.id)
        )
        found: dict[int, list[LiveTimer]] = {}
        with self._read() as conn:
            for r in conn.execute(query):
                live = (r.kind, r.name, int(r.rung), r.due_at, bool(r.pending), r.outcome)
                found.setdefault(int(r.case_id), []).append(live)
        return found

    def keys_of_cases(self, case_ids: Sequence[int]) -> dict[int, list[KeyOfCase]]:
        """(key, operation, actor, target, seq) of every idempotency key that wrote a record of each case."""
        k = idempotency_keys.c
        query = select(k.case_id, k.key, k.operation, k.actor, k.target, k.seq)
        found: dict[int, list[KeyOfCase]] = {}
        with self._read() as conn:
            for r in conn.execute(query.where(k.case_id.in_(list(case_ids))).order_by(k.case_id, k.seq)):
                key = (r.key, r.operation, r.actor, r.target, int(r.seq))
                found.setdefault(int(r.case_id), []).append(key)
        return found

    def cases_without_row(self) -> list[int]:
        """Ids of cases that have audit records but no case row (a deleted case row)."""
        query = (
            select(audit.c.case_id)
            .where(audit.c.seq == 1, audit.c.case_id.not_in(select(cases.c.id)))
            .order_by(audit.c.case_id)
        )
        with self._read() as conn:
            return [int(r) for r in conn.execute(query).scalars()]

    def _record(self, conn: Connection, case_id: int, seq: int) -> AuditRecord:
        row = conn.execute(select(audit).where(audit.c.case_id == case_id, audit.c.seq == seq)).one()
        return _audit_record(row)

    # -- transactions ------------------------------------------------------------------------------

    def _write(self) -> Any:
        return self._writer()

    def _read(self) -> database.connect_or_explain:
        self._writer.own_process()  # after a fork, never a pooled connection of the parent's
        return database.connect_or_explain(self.engine)

    @contextmanager
    def reading(self) -> Iterator[Reads]:
        """`Reads` on one read connection, outside any write: several small reads that belong together
        (the org's hash, a person's delegations, for the permission matrix) without a connection each."""
        with self._read() as conn:
            yield Reads(conn, self._sql)


def _key_use(key: str, found: Sequence[Any]) -> KeyUse:
    """A key's use from its columns as `Sql.key_use` (and `step_read`) read them."""
    operation, actor, target, case_id, seq, fingerprint = found[:6]
    return KeyUse(key, operation, actor, target, int(case_id), int(seq), fingerprint)


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


def _audit_record(row: Row[Any]) -> AuditRecord:
    m = dict(row._mapping)
    for name in ("payload", "data_change", "detail"):
        m[name] = json.loads(m[name])
    m["case_id"] = int(m["case_id"])
    return AuditRecord(**m)


def _period_lock(definition_id: str, schedule: str, period: datetime) -> int:
    """A 64-bit advisory lock key for one schedule period (PostgreSQL)."""
    digest = hashlib.blake2b(f"{definition_id}|{schedule}|{period.isoformat()}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _check_query(query: CaseQuery) -> None:
    """Refuse a data filter that has no JSON form (NaN, Infinity): neither database can compare with it."""
    from sopflow.engine.errors import UsageError

    for name, value in query.data_equals.items():
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise UsageError(
                f"the filter on data field `{name}` compares with {value!r}, which has no JSON form",
                hint="compare with a finite number, text, true, false or null",
            ) from None


def _link(row: Sequence[Any]) -> CaseLink:
    return CaseLink(int(row[0]), int(row[1]), int(row[2]), str(row[3]), str(row[4]), bool(row[5]))


def _deadlock(exc: OperationalError) -> bool:
    """Whether PostgreSQL undid the transaction to break a deadlock (SQLSTATE 40P01): two steps on linked
    cases (a parent leaving its sub-process state, its child closing) locked their rows in opposite
    orders. The whole step is tried again from its read."""
    return getattr(exc.orig, "sqlstate", None) == "40P01"

