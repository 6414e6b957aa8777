"""Sub-processes: a child case names the parent case and the parent's audit record that started it.

`cases` gains `parent_case_id` and `parent_seq` (both empty for a case nobody started as a sub-process),
written in the transaction that starts the child with its parent's step, and an index that finds a
case's open children when the parent leaves the state waiting on them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sopflow.engine.store.tables import CaseId

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("parent_case_id", CaseId))
        batch.add_column(sa.Column("parent_seq", sa.Integer))
    op.create_index("ix_cases_parent", "cases", ["parent_case_id", "open"])


def downgrade() -> None:
    op.drop_index("ix_cases_parent", table_name="cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("parent_seq")
        batch.drop_column("parent_case_id")
