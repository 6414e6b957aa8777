"""Parallel branches: who holds the work of each open branch, for the load of a person.

`branch_items` holds, per case, the branches of its current visit to a parallel state that a person holds
(a branch given to the least loaded member, claimed, or named by the data), written with the step that
changes them; the load of a person (least_loaded, a role's wip_limit) counts these beside the open cases
assigned to them. A row of an earlier visit (its `entered_seq` no longer the case's) counts for nothing.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "branch_items",
        sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("entered_seq", sa.Integer(), nullable=False),
        sa.Column("assignee", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "branch", name="pk_branch_items"),
    )
    op.create_index("ix_branch_items_assignee", "branch_items", ["assignee"])


def downgrade() -> None:
    op.drop_index("ix_branch_items_assignee", table_name="branch_items")
    op.drop_table("branch_items")
