"""Automatic steps: the tries of an automatic state's work are kept with its timer.

`timers.attempts` counts the failed tries of the work the timer is for, and `timers.last_error` holds the
error of the last one; a worker writes them after each failed try, so that a worker that takes the timer
over after a crash goes on with the tries that are left (and hands the case to a person with the last
error once none are) instead of starting again.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("timers") as batch:
        batch.drop_column("last_error")
        batch.drop_column("attempts")
