"""The first schema: definitions, orgs, cases, the append-only audit trail, idempotency keys, timers,
and the notification outbox with its delivery log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sopflow.engine.store.tables import CaseId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit", "definitions", "delegations")


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("source_text", sa.Text, nullable=False),
        sa.Column("file", sa.String(500), nullable=False),
        sa.Column("deployed_at", UTCDateTime, nullable=False),
        sa.Column("deployed_by", sa.String(64)),
        sa.PrimaryKeyConstraint("definition_id", "version", name="pk_definitions"),
    )
    op.create_table(
        "orgs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("source_text", sa.Text, nullable=False),
        sa.Column("file", sa.String(500), nullable=False),
        sa.Column("deployed_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "cases",
        sa.Column("id", CaseId, primary_key=True, autoincrement=True),
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("definition_version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("open", sa.Boolean, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("starter", sa.String(64), nullable=False),
        sa.Column("assignee", sa.String(64)),
        sa.Column("submitter", sa.String(64)),
        sa.Column("entered_seq", sa.Integer, nullable=False),
        sa.Column("entered_at", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("start_key", sa.String(200)),
        sa.UniqueConstraint("definition_id", "start_key", name="uq_cases_start_key"),
    )
    op.create_index("ix_cases_definition_state", "cases", ["definition_id", "state", "created_at", "id"])
    op.create_index("ix_cases_state", "cases", ["state", "created_at", "id"])
    op.create_index("ix_cases_assignee", "cases", ["assignee", "open", "created_at", "id"])
    op.create_index("ix_cases_open", "cases", ["open", "created_at", "id"])
    op.create_table(
        "audit",
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(64)),
        sa.Column("on_behalf_of", sa.String(64)),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(64)),
        sa.Column("to_state", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("data_change", sa.Text, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "seq", name="pk_audit"),
    )
    op.create_table(
        "fire_keys",
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("case_id", "key", name="pk_fire_keys"),
    )
    op.create_table(
        "timers",
        sa.Column("id", CaseId, primary_key=True, autoincrement=True),
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("rung", sa.Integer, nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("pending", sa.Boolean, nullable=False),
        sa.Column("entered_seq", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("done_at", UTCDateTime),
        sa.Column("outcome", sa.String(16)),
    )
    op.create_index("ix_timers_due", "timers", ["pending", "due_at"])
    op.create_index("ix_timers_case", "timers", ["case_id", "pending", "outcome"])
    op.create_index("ix_timers_outcome", "timers", ["kind", "outcome", "due_at"])
    op.create_table(
        "notifications",
        sa.Column("id", CaseId, primary_key=True, autoincrement=True),
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_notifications_due", "notifications", ["delivered_at", "next_attempt_at"])
    op.create_table(
        "deliveries",
        sa.Column("notification_id", CaseId, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("notification_id", "attempt", name="pk_deliveries"),
    )
    op.create_table(
        "delegations",
        sa.Column("id", CaseId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("delegator", sa.String(64), nullable=False),
        sa.Column("delegate", sa.String(64), nullable=False),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("starts_at", UTCDateTime, nullable=False),
        sa.Column("ends_at", UTCDateTime, nullable=False),
        sa.Column("revokes", CaseId),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_delegations_delegate", "delegations", ["delegate", "ends_at"])
    _append_only()


def _append_only() -> None:
    """Refuse UPDATE and DELETE on the audit trail and the deployed definitions, in the database itself."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION sopflow_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION sopflow_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION sopflow_append_only()"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS sopflow_append_only()")
    for name in (
        "delegations",
        "deliveries",
        "notifications",
        "timers",
        "fire_keys",
        "audit",
        "cases",
        "orgs",
        "definitions",
    ):
        op.drop_table(name)
