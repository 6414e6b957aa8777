"""Case control: whose turn it is in a round-robin state.

`assignment_turns` holds, per definition and state with `assign: {round_robin: ROLE}`, the member last
given a case there; the step that gives the next one writes it in its own transaction, so the turn moves
on exactly once per case whatever the workers do. Suspensions, cancels and work items need no table:
they are audit records (and timer rows that pause).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assignment_turns",
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("assignee", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("definition_id", "state", name="pk_assignment_turns"),
    )


def downgrade() -> None:
    op.drop_table("assignment_turns")
