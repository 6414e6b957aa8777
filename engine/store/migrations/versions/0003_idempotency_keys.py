"""Idempotency keys remember who used them, for what, with which content.

One table, `idempotency_keys`, holds every key of the database, for starts and fires alike: a key names
one write request, so reusing it for another case, another definition or another kind of request is a
conflict, which the earlier per-case `fire_keys` and per-definition `cases.start_key` could not see. Each
row says who used the key (`actor`), for which `operation` (start or fire) and `target` (the definition
started, or the event fired), on which case and audit record, and a `fingerprint` of the request's content.

The keys already stored move over: a start key from its case, a fire key from the audit record it wrote
(the key's first use when one was used on several cases). Their content was never kept, so their
fingerprint is NULL: a retry of those is matched on actor, operation and target alone.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sopflow.engine.store.tables import CaseId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("operation", sa.String(8), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_idempotency_keys"),
    )
    # Starts first: a key a start used stays that start's. Of the cases one key started (one per
    # definition was allowed), the first keeps it.
    op.execute(
        "INSERT INTO idempotency_keys (key, operation, actor, target, fingerprint, case_id, seq, created_at) "
        "SELECT c.start_key, 'start', c.starter, c.definition_id, NULL, c.id, 1, c.created_at FROM cases c "
        "WHERE c.start_key IS NOT NULL "
        "AND c.id = (SELECT MIN(o.id) FROM cases o WHERE o.start_key = c.start_key)"
    )
    op.execute(
        "INSERT INTO idempotency_keys (key, operation, actor, target, fingerprint, case_id, seq, created_at) "
        "SELECT k.key, 'fire', a.actor, a.event, NULL, k.case_id, k.seq, c.updated_at "
        "FROM fire_keys k JOIN audit a ON a.case_id = k.case_id AND a.seq = k.seq "
        "JOIN cases c ON c.id = k.case_id "
        "WHERE k.case_id = (SELECT MIN(o.case_id) FROM fire_keys o WHERE o.key = k.key) "
        "AND NOT EXISTS (SELECT 1 FROM idempotency_keys i WHERE i.key = k.key)"
    )
    op.drop_table("fire_keys")


def downgrade() -> None:
    op.create_table(
        "fire_keys",
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("case_id", "key", name="pk_fire_keys"),
    )
    op.execute(
        "INSERT INTO fire_keys (case_id, key, seq) "
        "SELECT case_id, key, seq FROM idempotency_keys WHERE operation = 'fire'"
    )
    op.drop_table("idempotency_keys")
