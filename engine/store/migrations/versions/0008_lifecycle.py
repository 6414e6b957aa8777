"""The SOP lifecycle: trials, adoptions and migrations of a definition, as an append-only log.

`lifecycle_actions` holds one row per act on a definition's versions: a trial started (its split), a trial
stopped, a version adopted, a migration of running cases run (its counts); accepted or refused, by whom
and in which role. Which version a new case starts on is read from the definition's last accepted row.
The cases a migration moves carry their own `migrate_case` audit records; this log holds the act.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sopflow.engine.store.tables import CaseId, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_actions",
        sa.Column("id", CaseId, primary_key=True, autoincrement=True),
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("versions", sa.Text, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_lifecycle_definition", "lifecycle_actions", ["definition_id", "outcome", "id"])


def downgrade() -> None:
    op.drop_index("ix_lifecycle_definition", "lifecycle_actions")
    op.drop_table("lifecycle_actions")
