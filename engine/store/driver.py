"""The store's hot statements as the driver's own SQL, run on the connection SQLAlchemy holds.

A step, a case read and a listing send a handful of small statements. Through SQLAlchemy Core each one
costs ~50–80 µs of Python (bound parameters processed one by one, the compiled-statement cache, events,
a result object) against ~5–10 µs through the bare driver, which is more than SQLite takes to run it;
see "The hot path of a step" in docs/decisions.md. So these statements are plain SQL strings, written
once with `?` markers (turned into psycopg's `%s` for PostgreSQL) and executed on the driver connection
underneath SQLAlchemy's `Connection`: SQLAlchemy still opens, begins, commits and pools the connection;
only the statement bypasses it. Errors come out as SQLAlchemy's exceptions, as from Core.

The SQL is portable: the same text runs on SQLite and PostgreSQL (no literal may contain `?` or `%`).
The conversions SQLAlchemy's column types make are made here by hand: times are stored as naive UTC
(`UTCDateTime`; on SQLite as SQLAlchemy's text format, always with microseconds, so that text order is
time order), booleans come back from SQLite as 0/1, JSON is canonical text.
"""

# ruff: noqa: S608 - every statement here is fixed text, column names and `?` markers; values are always
# bound parameters, never part of the SQL.

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from sopflow.engine.audit import AuditRecord, canonical_json
from sopflow.engine.store.access import scope_sql
from sopflow.engine.store.records import CaseQuery, CaseRow, TimerSpec, Write

CASE_COLUMNS = tuple(f.name for f in fields(CaseRow))
"""The columns of `cases` in `CaseRow`'s order, so that a row builds a CaseRow positionally."""
AUDIT_COLUMNS = (
    "case_id", "seq", "at", "actor", "role", "on_behalf_of", "event", "from_state", "to_state", "outcome",
    "payload", "data_change", "comment", "reason", "detail", "definition_hash", "prev_hash", "hash",
)  # fmt: skip
TIMER_COLUMNS = ("id", "case_id", "kind", "name", "rung", "due_at", "entered_seq")
"""As `TimerRow`."""
_CASE_WIDTH = len(CASE_COLUMNS)
_JSON_COLUMNS = ("payload", "data_change", "detail")
_SELECT_CASE = "SELECT " + ", ".join(CASE_COLUMNS) + " FROM cases"
_SUSPENDED = (
    "(open = ? AND (SELECT a.event FROM audit a WHERE a.case_id = cases.id AND a.outcome = 'accepted' "
    "ORDER BY a.seq DESC LIMIT 1) = 'suspend_case')"
)
"""A suspended case: not open, and its last accepted record suspended it (no column says so: the
trail does). Parameter: False."""
_CHUNK = 500
"""Ids per `IN (…)` list: far below SQLite's oldest limit of 999 parameters per statement."""


def run(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """Execute `sql` (already in the driver's paramstyle) on the driver connection under `conn`, inside
    whatever transaction SQLAlchemy has begun there; returns the driver's cursor. A driver error is
    raised as SQLAlchemy's wrapper of it (IntegrityError, OperationalError, …), as Core would."""
    dbapi = conn.dialect.loaded_dbapi
    driver = conn.connection.driver_connection
    try:
        return driver.execute(sql, params)  # type: ignore[union-attr]
    except dbapi.Error as exc:
        if conn.dialect.is_disconnect(exc, driver, None):
            # As Core does for its statements: the pool then drops the connection instead of resetting
            # it, which would fail on it and log a traceback.
            conn.invalidate()
        raise DBAPIError.instance(sql, params, exc, dbapi.Error, dialect=conn.dialect) from exc


_DECODE = json.JSONDecoder().raw_decode
"""`json.loads` without its checks (~0.4 µs instead of ~1.3 for a small object): the text is the canonical
JSON sopflow wrote."""


def decode_json(text: str) -> Any:
    """JSON text back to its value, as `json.loads` would; quickly for canonical text (no surrounding
    whitespace), which is all sopflow writes."""
    try:
        value, end = _DECODE(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def sqlite_time(text: str) -> datetime:
    """A time SQLite hands back (SQLAlchemy's text format, UTC) as an aware datetime; parsing it with its
    offset is several times faster than `.replace(tzinfo=UTC)` afterwards."""
    return datetime.fromisoformat(text + "+00:00")


def postgres_time(value: datetime) -> datetime:
    """A time psycopg hands back (naive, UTC) as an aware datetime."""
    return value.replace(tzinfo=UTC)


def when(value: Any) -> datetime:
    """A stored time as an aware UTC datetime, from either driver."""
    return sqlite_time(value) if isinstance(value, str) else postgres_time(value)


def chunks(ids: Iterable[int]) -> list[list[int]]:
    """`ids` without repeats, in lists short enough for one `IN (…)` each."""
    unique = list(dict.fromkeys(ids))
    return [unique[i : i + _CHUNK] for i in range(0, len(unique), _CHUNK)]


def _marks(count: int) -> str:
    return ", ".join(["?"] * count)


def _text(sql: str, postgres: bool) -> str:
    """`sql` with the driver's parameter markers."""
    return sql.replace("?", "%s") if postgres else sql


def _update_case(changed: bool, entered: bool) -> str:
    sets = ""
    if changed:
        sets = "state = ?, open = ?, data = ?, version = version + 1, assignee = ?, submitter = ?, "
        sets += "updated_at = ?, entered_seq = ?, entered_at = ?, " if entered else "updated_at = ?, "
    return (
        f"UPDATE cases SET {sets}audit_seq = ?, last_hash = ? WHERE id = ? AND version = ? AND audit_seq = ?"
    )


_STEP_READ = (
    "SELECT "
    + ", ".join(f"c.{name}" for name in CASE_COLUMNS)
    + ", (SELECT o.content_hash FROM orgs o ORDER BY o.id DESC LIMIT 1)"
    ", EXISTS (SELECT 1 FROM delegations d WHERE d.delegate = ? AND d.kind = 'grant' AND d.ends_at > ?)"
    ", k.operation, k.actor, k.target, k.case_id, k.seq, k.fingerprint"
    " FROM cases c LEFT JOIN idempotency_keys k ON k.key = ? WHERE c.id = ?"
)
KEY_COLUMNS = ("key", "operation", "actor", "target", "fingerprint", "case_id", "seq", "created_at")
_INSERT_KEY = f"INSERT INTO idempotency_keys ({', '.join(KEY_COLUMNS)})"


@dataclass(frozen=True, slots=True)
class Sql:
    """The hot statements for one dialect, built once per store, and the value conversions SQLAlchemy's
    column types would make."""

    postgres: bool
    step_read: str
    """The case, with what a step needs besides: the deployed org's hash, whether any grant to the acting
    person may still run (their delegations are loaded only then), and the earlier use of an idempotency
    key (operation, actor, target, case id, seq, fingerprint; NULLs when unused). Parameters: delegate,
    now, key, case id."""
    case_by_id: str
    update_step: str
    """The conditional update of a case row (only if its version and audit seq are still the ones read).
    Parameters: state, open, data, assignee, submitter, updated_at, audit_seq, last_hash, id, version
    read, audit_seq read."""
    update_step_entered: str
    """As `update_step`, with entered_seq and entered_at after updated_at."""
    update_chain: str
    """A refusal: only the chain moves. Parameters: audit_seq, last_hash, id, version, audit_seq read."""
    insert_case: str
    """Every column but id, in `CASE_COLUMNS` order; returns the id."""
    seal_case: str
    """Parameters: audit_seq, last_hash, id."""
    insert_audit: str
    insert_audit_after: str
    """PostgreSQL's combined step statement (`together`): the audit insert, only if the case update `u`
    matched."""
    insert_key: str
    """An idempotency key, in `KEY_COLUMNS` order."""
    insert_key_after: str
    """As `insert_key`, for the combined statement (`together`)."""
    key_use: str
    """An idempotency key's earlier use, as `step_read` reads it. Parameters: key."""
    votes: str
    """Accepted votes of one case after an audit seq. Parameters: case id, seq."""
    org_hash: str
    lock_timer: str
    """The timer, if still pending and leased to this worker (locked on PostgreSQL). Parameters: id,
    True, owner."""
    finish_timer: str
    """Parameters: False, done_at, outcome, id."""

    @classmethod
    def of(cls, dialect: str) -> Sql:
        pg = dialect == "postgresql"
        names = CASE_COLUMNS[1:]
        insert_case = f"INSERT INTO cases ({', '.join(names)}) VALUES ({_marks(len(names))})"
        lock_timer = "SELECT id FROM timers WHERE id = ? AND pending = ? AND lease_owner = ?"
        return cls(
            postgres=pg,
            step_read=_text(_STEP_READ, pg),
            case_by_id=_text(_SELECT_CASE + " WHERE id = ?", pg),
            update_step=_text(_update_case(True, False), pg),
            update_step_entered=_text(_update_case(True, True), pg),
            update_chain=_text(_update_case(False, False), pg),
            insert_case=_text(insert_case + " RETURNING id", pg),
            seal_case=_text("UPDATE cases SET audit_seq = ?, last_hash = ? WHERE id = ?", pg),
            insert_audit=_text(
                f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) VALUES ({_marks(len(AUDIT_COLUMNS))})", pg
            ),
            insert_audit_after=_text(
                f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) SELECT {_marks(len(AUDIT_COLUMNS))} FROM u",
                pg,
            ),
            insert_key=_text(f"{_INSERT_KEY} VALUES ({_marks(len(KEY_COLUMNS))})", pg),
            insert_key_after=_text(f"{_INSERT_KEY} SELECT {_marks(len(KEY_COLUMNS))} FROM u", pg),
            key_use=_text(
                "SELECT operation, actor, target, case_id, seq, fingerprint FROM idempotency_keys "
                "WHERE key = ?",
                pg,
            ),
            votes=_text(
                "SELECT actor, role, event, on_behalf_of FROM audit WHERE case_id = ? AND seq > ? "
                "AND outcome = 'accepted' AND event IN ('approve', 'reject') ORDER BY seq",
                pg,
            ),
            org_hash=_text("SELECT content_hash FROM orgs ORDER BY id DESC LIMIT 1", pg),
            lock_timer=_text(lock_timer + " FOR UPDATE" if pg else lock_timer, pg),
            finish_timer=_text(
                "UPDATE timers SET pending = ?, done_at = ?, outcome = ?, lease_owner = NULL, "
                "lease_until = NULL WHERE id = ?",
                pg,
            ),
        )

    def text(self, sql: str) -> str:
        """`sql` with the driver's parameter markers."""
        return _text(sql, self.postgres)

    def case_row(self, values: Sequence[Any]) -> CaseRow:
        """A CaseRow from the first len(CASE_COLUMNS) values of a driver row."""
        time = postgres_time if self.postgres else sqlite_time
        (case_id, definition_id, definition_version, state, is_open, data, version, starter, assignee,
         submitter, entered_seq, entered_at, created_at, updated_at, audit_seq, last_hash, start_key,
         ) = values[:_CASE_WIDTH]  # fmt: skip
        return CaseRow(
            int(case_id), definition_id, definition_version, state, bool(is_open), decode_json(data), version,
            starter, assignee, submitter, entered_seq, time(entered_at), time(created_at), time(updated_at),
            audit_seq, last_hash, start_key,
        )  # fmt: skip

    def time(self, value: datetime) -> Any:
        """A time as the driver should bind it: naive UTC (on SQLite, as SQLAlchemy's text format)."""
        if value.tzinfo is None:
            raise ValueError("sopflow stores aware datetimes only")
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return naive if self.postgres else naive.isoformat(" ", "microseconds")

    @staticmethod
    def audit_values(rec: AuditRecord) -> list[Any]:
        body = rec.body()
        for name in _JSON_COLUMNS:
            body[name] = canonical_json(body[name])
        body["hash"] = rec.hash
        return [body[name] for name in AUDIT_COLUMNS]

    def cancel_timers(self, *, state: bool, names: int, after_update: bool = False) -> str:
        """Cancel pending timers of a case (its `timeout` timers when `state`, and those named), and close
        as late the breached deadlines among the named: a breached deadline stays overdue until its span
        ends. One statement; SET reads the row's old `pending`; each side of the OR is a search of
        ix_timers_case (a breached deadline is never pending). Parameters: False, True, True, now,
        case id, True, the names, and when there are any: case id, False, the names again. With
        `after_update`, written for the combined statement (`together`): only if the case update matched."""
        marks = _marks(names)
        which = " OR ".join(
            (["kind = 'timeout'"] if state else []) + ([f"name IN ({marks})"] if names else [])
        )
        where = f"(case_id = ? AND pending = ? AND ({which}))"
        if names:
            where += (
                " OR (case_id = ? AND pending = ? AND outcome = 'breached' AND kind = 'deadline'"
                f" AND name IN ({marks}))"
            )
        if after_update:
            where = f"({where}) AND EXISTS (SELECT 1 FROM u)"
        return self.text(
            "UPDATE timers SET pending = ?, "
            "outcome = CASE WHEN pending = ? THEN 'cancelled' ELSE 'late' END, "
            "done_at = CASE WHEN pending = ? THEN ? ELSE done_at END "
            f"WHERE {where}"
        )

    def start_timers(
        self, case_id: int, seq: int, specs: Sequence[TimerSpec], *, after_update: bool = False
    ) -> tuple[str, list[Any]]:
        """Insert the timers a step starts, in one statement; a deadline whose span is already running
        (pending or breached) is not restarted: re-entering a span's first state keeps its clock. With
        `after_update`, written for the combined statement (`together`)."""
        parts: list[str] = []
        params: list[Any] = []
        source = " FROM u" if after_update else ""
        for t in specs:
            part = "SELECT ?, ?, ?, ?, ?, ?, ?" + source
            params += [case_id, t.kind, t.name, t.rung, self.time(t.due_at), True, t.entered_seq or seq]
            if t.kind == "deadline":
                # Two searches of ix_timers_case rather than one OR, which would read every timer the
                # case ever had; a breached deadline is never pending.
                part += (
                    " WHERE NOT EXISTS (SELECT 1 FROM timers WHERE case_id = ? AND pending = ?"
                    " AND kind = 'deadline' AND name = ?)"
                    " AND NOT EXISTS (SELECT 1 FROM timers WHERE case_id = ? AND pending = ?"
                    " AND outcome = 'breached' AND kind = 'deadline' AND name = ?)"
                )
                params += [case_id, True, t.name, case_id, False, t.name]
            parts.append(part)
        columns = "case_id, kind, name, rung, due_at, pending, entered_seq"
        return self.text(f"INSERT INTO timers ({columns}) " + " UNION ALL ".join(parts)), params

    def step_statements(
        self, write: Write, stamp: Any, *, after_update: bool = False, start: bool = True
    ) -> list[tuple[str, Sequence[Any]]]:
        """What a step writes after its case update, in order: the audit record, the timers it cancels,
        the timers it starts (unless not `start`), its idempotency key. `stamp` is the step's time as the
        driver binds it. With `after_update`, each is written for PostgreSQL's combined statement
        (`together`)."""
        rec = write.record
        parts: list[tuple[str, Sequence[Any]]] = [
            (self.insert_audit_after if after_update else self.insert_audit, self.audit_values(rec))
        ]
        names = write.cancel_timers
        if write.cancel_state_timers or names:
            cancel = self.cancel_timers(
                state=write.cancel_state_timers, names=len(names), after_update=after_update
            )
            tail = (rec.case_id, False, *names) if names else ()
            parts.append((cancel, (False, True, True, stamp, rec.case_id, True, *names, *tail)))
        if write.pause_timers:
            # A suspension: the pending timers stop; the suspension's record keeps what each had left.
            pause = (
                "UPDATE timers SET pending = ?, outcome = 'paused', done_at = ? "
                "WHERE case_id = ? AND pending = ?"
            )
            if after_update:
                pause += " AND EXISTS (SELECT 1 FROM u)"
            parts.append((self.text(pause), (False, stamp, rec.case_id, True)))
        if write.turn is not None:
            source = "SELECT ?, ?, ? FROM u" if after_update else "VALUES (?, ?, ?)"
            turn = (
                f"INSERT INTO assignment_turns (definition_id, state, assignee) {source} "
                "ON CONFLICT (definition_id, state) DO UPDATE SET assignee = excluded.assignee"
            )
            parts.append((self.text(turn), write.turn))
        if start and write.start_timers:
            starts = self.start_timers(rec.case_id, rec.seq, write.start_timers, after_update=after_update)
            parts.append(starts)
        if write.key is not None:
            k = write.key
            key = (k.key, k.operation, k.actor, k.target, k.fingerprint, rec.case_id, rec.seq, stamp)
            parts.append((self.insert_key_after if after_update else self.insert_key, key))
        return parts

    @staticmethod
    def together(
        update: str, params: Sequence[Any], parts: Sequence[tuple[str, Sequence[Any]]]
    ) -> tuple[str, list[Any]]:
        """PostgreSQL: the case update and the statements after it (written `after_update`) as one
        statement, one round trip instead of one each. Its one row counts the case rows updated: 0 when
        another writer moved the case first, and then nothing else was written either.

        The statements of a WITH all see the database as it was before the statement, so none of them
        may read what another one writes: the audit, the cancels and the starts touch different rows,
        except a start's check for a running deadline after a cancel, which the caller sends apart."""
        ctes = [f"u AS ({update} RETURNING id)"]
        ctes += [f"w{i} AS ({text})" for i, (text, _) in enumerate(parts)]
        values = [*params]
        for _, more in parts:
            values += more
        return "WITH " + ", ".join(ctes) + " SELECT COUNT(*) FROM u", values

    def open_load(self, members: int) -> str:
        """Open cases and branch work items of open cases per assignee among `members` assignees.
        Parameters: True, the members, True, the members."""
        return self.text(
            "SELECT assignee, COUNT(*) FROM ("
            f"SELECT assignee FROM cases WHERE open = ? AND assignee IN ({_marks(members)}) "
            "UNION ALL SELECT b.assignee FROM branch_items b JOIN cases c ON c.id = b.case_id "
            "AND (c.entered_seq = b.entered_seq OR b.entered_seq = 0) "
            f"WHERE c.open = ? AND b.assignee IN ({_marks(members)})"
            ") held GROUP BY assignee"
        )

    # -- reading many ------------------------------------------------------------------------------

    def cases(self, query: CaseQuery) -> tuple[str, list[Any]]:
        """One page of cases matching `query`, oldest (or newest) first."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("definition_id", query.definition_id),
            ("state", query.state),
            ("assignee", query.assignee),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.open is not None:
            if query.open and query.or_suspended:
                where.append(f"(open = ? OR {_SUSPENDED})")
                params += [True, False]
            else:
                where.append("open = ?")
                params.append(query.open)
        if query.suspended is not None:
            where.append(_SUSPENDED if query.suspended else f"NOT {_SUSPENDED}")
            params.append(False)
        if query.created_before is not None:
            where.append("created_at < ?")
            params.append(self.time(query.created_before))
        if query.after_id is not None:
            where.append("id < ?" if query.newest_first else "id > ?")
            params.append(query.after_id)
        for name, value in query.data_equals.items():
            if self.postgres:
                where.append("CAST(data AS JSONB) -> CAST(? AS TEXT) = CAST(? AS JSONB)")
                params += [name, json.dumps(value)]
            else:
                where.append("json_extract(data, ?) = json_extract(?, '$.v')")
                params += [f"$.{json.dumps(name)}", json.dumps({"v": value}, ensure_ascii=False)]
        if query.scope is not None:
            clause, values = scope_sql(query.scope)
            where.append(clause)
            params += values
        order = "created_at DESC, id DESC" if query.newest_first else "created_at, id"
        sql = _SELECT_CASE + (" WHERE " + " AND ".join(where) if where else "")
        return self.text(f"{sql} ORDER BY {order} LIMIT ?"), [*params, query.limit]

    def cases_each(self, queries: Sequence[CaseQuery]) -> tuple[str, list[Any]]:
        """Several pages in one statement, each its own indexed search (UNION ALL of subqueries, since
        SQLite allows ORDER BY and LIMIT only there)."""
        parts: list[str] = []
        params: list[Any] = []
        for n, query in enumerate(queries):
            sql, values = self.cases(query)
            parts.append(f"SELECT * FROM ({sql}) AS p{n}")
            params += values
        return " UNION ALL ".join(parts), params

    def suspended_among(self, count: int) -> str:
        """Which of `count` cases are suspended. Parameters: the case ids, False."""
        return self.text(f"SELECT id FROM cases WHERE id IN ({_marks(count)}) AND {_SUSPENDED}")

    def live_timers(self, count: int) -> str:
        """The pending timers and the breached deadlines of `count` cases: two searches of ix_timers_case.
        Neither the kind nor an order is asked of SQL: either makes SQLite's planner (which has no
        statistics) prefer an index that reads every timer of that kind or in due order.
        Parameters: the case ids, True, the case ids, False."""
        select = "SELECT " + ", ".join(TIMER_COLUMNS) + f" FROM timers WHERE case_id IN ({_marks(count)})"
        return self.text(
            f"{select} AND pending = ? UNION ALL {select} AND pending = ? AND outcome = 'breached'"
        )

    def all_votes(self, count: int) -> str:
        """Accepted votes of `count` cases, with their audit seq, in order."""
        return self.text(
            "SELECT case_id, seq, actor, role, event, on_behalf_of FROM audit "
            f"WHERE case_id IN ({_marks(count)}) AND outcome = 'accepted' AND event IN ('approve', 'reject') "
            "ORDER BY case_id, seq"
        )
