"""The database tables, as SQLAlchemy Core metadata. The Alembic migrations create exactly these.

JSON values (case data, payloads, audit details) are stored as canonical JSON text: the same on SQLite
and PostgreSQL, and exactly what the audit hashes cover.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back as an aware UTC datetime, on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("sopflow stores aware datetimes only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

CaseId = BigInteger().with_variant(Integer, "sqlite")

definitions = Table(
    "definitions",
    metadata,
    Column("definition_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("source_text", Text, nullable=False),
    Column("file", String(500), nullable=False),
    Column("deployed_at", UTCDateTime, nullable=False),
    Column("deployed_by", String(64)),
    PrimaryKeyConstraint("definition_id", "version", name="pk_definitions"),
)

orgs = Table(
    "orgs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("source_text", Text, nullable=False),
    Column("file", String(500), nullable=False),
    Column("deployed_at", UTCDateTime, nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("id", CaseId, primary_key=True, autoincrement=True),
    Column("definition_id", String(64), nullable=False),
    Column("definition_version", Integer, nullable=False),
    Column("state", String(64), nullable=False),
    Column("open", Boolean, nullable=False),
    Column("data", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("starter", String(64), nullable=False),
    Column("assignee", String(64)),
    Column("submitter", String(64)),
    Column("entered_seq", Integer, nullable=False),
    Column("entered_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("audit_seq", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("start_key", String(200)),
    # A sub-process's child: the parent case and its record that started it (migration 0006).
    Column("parent_case_id", CaseId),
    Column("parent_seq", Integer),
    UniqueConstraint("definition_id", "start_key", name="uq_cases_start_key"),
    Index("ix_cases_definition_state", "definition_id", "state", "created_at", "id"),
    Index("ix_cases_state", "state", "created_at", "id"),
    # One person's open cases in creation order (`Engine.cases(assignee=..., open=True)`, task lists): the
    # index gives them directly, however few they are among all open cases.
    Index("ix_cases_assignee", "assignee", "open", "created_at", "id"),
    Index("ix_cases_open", "open", "created_at", "id"),
    Index("ix_cases_parent", "parent_case_id", "open"),
)

audit = Table(
    "audit",
    metadata,
    Column("case_id", CaseId, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", String(32), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("role", String(64)),
    Column("on_behalf_of", String(64)),
    Column("event", String(64), nullable=False),
    Column("from_state", String(64)),
    Column("to_state", String(64)),
    Column("outcome", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    Column("data_change", Text, nullable=False),
    Column("comment", Text),
    Column("reason", Text),
    Column("detail", Text, nullable=False),
    Column("definition_hash", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    PrimaryKeyConstraint("case_id", "seq", name="pk_audit"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # One key names one write request across the whole database (engine/store/keys.py).
    Column("key", String(200), nullable=False),
    Column("operation", String(8), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("target", String(64), nullable=False),
    Column("fingerprint", String(64)),
    Column("case_id", CaseId, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("key", name="pk_idempotency_keys"),
)

timers = Table(
    "timers",
    metadata,
    Column("id", CaseId, primary_key=True, autoincrement=True),
    Column("case_id", CaseId, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("rung", Integer, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("pending", Boolean, nullable=False),
    Column("entered_seq", Integer, nullable=False),
    Column("lease_owner", String(100)),
    Column("lease_until", UTCDateTime),
    Column("done_at", UTCDateTime),
    Column("outcome", String(16)),
    # The failed tries of an automatic state's work and the last one's error (migration 0011).
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Index("ix_timers_due", "pending", "due_at"),
    # A case's pending timers, and its breached deadlines (pending false, outcome "breached"), found
    # without reading the rest of its timer history: a step checks and cancels them.
    Index("ix_timers_case", "case_id", "pending", "outcome"),
    Index("ix_timers_outcome", "kind", "outcome", "due_at"),
)

branch_items = Table(
    "branch_items",
    metadata,
    # Who holds each open branch of a case's parallel state, for a person's load (migration 0012).
    Column("case_id", CaseId, nullable=False),
    Column("branch", String(255), nullable=False),
    Column("entered_seq", Integer, nullable=False),
    Column("assignee", String(64), nullable=False),
    PrimaryKeyConstraint("case_id", "branch", name="pk_branch_items"),
    Index("ix_branch_items_assignee", "assignee"),
)

assignment_turns = Table(
    "assignment_turns",
    metadata,
    # Whose turn it is in a round-robin state: the member last given a case there (migration 0007).
    Column("definition_id", String(64), nullable=False),
    Column("state", String(64), nullable=False),
    Column("assignee", String(64), nullable=False),
    PrimaryKeyConstraint("definition_id", "state", name="pk_assignment_turns"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", CaseId, primary_key=True, autoincrement=True),
    Column("case_id", CaseId, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Column("last_error", Text),
    # The worker holding a delivery and until when (migration 0004): only the holder records it.
    Column("lease_owner", String(100)),
    Column("lease_until", UTCDateTime),
    Index("ix_notifications_due", "delivered_at", "next_attempt_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("notification_id", CaseId, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    PrimaryKeyConstraint("notification_id", "attempt", name="pk_deliveries"),
)

schedule_periods = Table(
    "schedule_periods",
    metadata,
    # One row per period a schedule started (migration 0005), written with the case's start: the
    # primary key is what starts a period once, however many workers look at it.
    Column("definition_id", String(64), nullable=False),
    Column("schedule", String(64), nullable=False),
    Column("period", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("case_id", CaseId, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("definition_id", "schedule", "period", name="pk_schedule_periods"),
)

delegations = Table(
    "delegations",
    metadata,
    Column("id", CaseId, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("delegator", String(64), nullable=False),
    Column("delegate", String(64), nullable=False),
    Column("roles", Text, nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("revokes", CaseId),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("reason", Text),
    Index("ix_delegations_delegate", "delegate", "ends_at"),
)


lifecycle_actions = Table(
    "lifecycle_actions",
    metadata,
    # The SOP lifecycle's acts on a definition's versions (migration 0008): trials, adoptions, migrations.
    Column("id", CaseId, primary_key=True, autoincrement=True),
    Column("definition_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("versions", Text, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("role", String(64)),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text),
    Column("detail", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    # Append-only and hash-chained (migration 0014): each act's `prev_hash` is the `hash` of the one before.
    Column("prev_hash", String(64), nullable=False, server_default=""),
    Column("hash", String(64), nullable=False, server_default=""),
    Index("ix_lifecycle_definition", "definition_id", "outcome", "id"),
    Index("ux_lifecycle_actions_prev", "prev_hash", unique=True),
)

insight_steps = Table(
    "insight_steps",
    metadata,
    # One row per audit record that acts in a state, derived from the trail (migration 0009): the visit it
    # ends with its wall-clock and working durations, the time suspended counted apart (engine/insight).
    Column("case_id", CaseId, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("definition_id", String(64), nullable=False),
    Column("definition_version", Integer, nullable=False),
    Column("state", String(64), nullable=False),
    Column("event", String(64), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("role", String(64)),
    Column("accepted", Boolean, nullable=False),
    Column("ends_visit", Boolean, nullable=False),
    Column("kind", String(12), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("week", String(10), nullable=False),
    Column("month", String(7), nullable=False),
    Column("entered_at", UTCDateTime),
    Column("wall_seconds", Float),
    Column("working_seconds", Float),
    Column("paused_seconds", Float),
    Column("score", Float),
    PrimaryKeyConstraint("case_id", "seq", name="pk_insight_steps"),
    Index("ix_insight_steps_definition", "definition_id", "at"),
)

insight_spans = Table(
    "insight_spans",
    metadata,
    # One row per deadline span, derived from the trail: breached or not, the highest rung reached.
    Column("case_id", CaseId, nullable=False),
    Column("deadline", String(64), nullable=False),
    Column("started_seq", Integer, nullable=False),
    Column("definition_id", String(64), nullable=False),
    Column("definition_version", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("week", String(10), nullable=False),
    Column("breached", Boolean, nullable=False),
    Column("rung", Integer, nullable=False),
    PrimaryKeyConstraint("case_id", "deadline", "started_seq", name="pk_insight_spans"),
    Index("ix_insight_spans_definition", "definition_id", "started_at"),
)

insight_progress = Table(
    "insight_progress",
    metadata,
    # Up to which record of each case the two tables above are derived.
    Column("case_id", CaseId, nullable=False),
    Column("seq", Integer, nullable=False),
    PrimaryKeyConstraint("case_id", name="pk_insight_progress"),
)

insight_baselines = Table(
    "insight_baselines",
    metadata,
    # Append-only: a new baseline is a new row and the newest per definition and step is the current one.
    Column("id", CaseId, primary_key=True, autoincrement=True),
    Column("definition_id", String(64), nullable=False),
    Column("step", String(64), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("kind", String(12), nullable=False),
    Column("source", Text, nullable=False),
    Column("period", String(7)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(64), nullable=False),
    # A hash chain in id order (migration 0013): `prev_hash` is the row before's `hash`, unique.
    Column("prev_hash", String(64), nullable=False, server_default=""),
    Column("hash", String(64), nullable=False, server_default=""),
    UniqueConstraint("definition_id", "step", "kind", "period", name="uq_insight_baselines_period"),
    Index("ix_insight_baselines", "definition_id", "step", "id"),
    Index("ux_insight_baselines_prev", "prev_hash", unique=True),
)

# The permission matrix's "own" and "department" scopes look a case up by who started or submitted it
# (the assignee has ix_cases_assignee), migration 0010.
Index("ix_cases_starter", cases.c.starter, cases.c.open, cases.c.created_at, cases.c.id)
Index("ix_cases_submitter", cases.c.submitter, cases.c.open)

access_log = Table(
    "access_log",
    metadata,
    # Refused reads and writes and every export (migration 0010): one hash chain over every row, in `seq`
    # order, append-only like the audit trail (engine/access_log.py).
    Column("seq", CaseId, nullable=False),
    Column("at", String(32), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("records", Integer, nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    PrimaryKeyConstraint("seq", name="pk_access_log"),
    Index("ix_access_log_actor", "actor", "seq"),
)
