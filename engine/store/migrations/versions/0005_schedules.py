"""Schedules: one row per period a definition's schedule started, written with the case it started.

The primary key (definition, schedule, period) is what makes a period start exactly once whatever the
number of workers: the row is inserted in the same transaction as the case's start, so a second worker's
insert finds it (or waits for it, and then finds it) and starts nothing.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sopflow.engine.store.tables import CaseId, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_periods",
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("schedule", sa.String(64), nullable=False),
        sa.Column("period", UTCDateTime, nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("definition_id", "schedule", "period", name="pk_schedule_periods"),
    )


def downgrade() -> None:
    op.drop_table("schedule_periods")
