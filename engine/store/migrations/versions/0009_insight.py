"""Insight: the figures a manager reads, derived from the audit trail, and the baselines they are held to.

`insight_steps` holds one row per audit record that acts in a state (a step, a refused attempt): who,
when, and for a record that ends a visit of its state, how long the visit took in wall-clock and working
time (the org's calendar) with the time the case was suspended counted apart. `insight_spans` holds one row
per deadline span (its start, its end, whether it was breached and the highest escalation rung reached).
Both are rebuilt from the trail (`insight_progress` says up to which record of each case); `sopflow report
--check` and `audit verify` recompute them from the trail. `insight_baselines` is append-only: a new
baseline is a new row, the current one is the newest.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sopflow.engine.store.tables import CaseId, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insight_steps",
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("definition_version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(64)),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("ends_visit", sa.Boolean, nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("week", sa.String(10), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("entered_at", UTCDateTime),
        sa.Column("wall_seconds", sa.Float),
        sa.Column("working_seconds", sa.Float),
        sa.Column("paused_seconds", sa.Float),
        sa.Column("score", sa.Float),
        sa.PrimaryKeyConstraint("case_id", "seq", name="pk_insight_steps"),
    )
    op.create_index("ix_insight_steps_definition", "insight_steps", ["definition_id", "at"])
    op.create_table(
        "insight_spans",
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("deadline", sa.String(64), nullable=False),
        sa.Column("started_seq", sa.Integer, nullable=False),
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("definition_version", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("week", sa.String(10), nullable=False),
        sa.Column("breached", sa.Boolean, nullable=False),
        sa.Column("rung", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("case_id", "deadline", "started_seq", name="pk_insight_spans"),
    )
    op.create_index("ix_insight_spans_definition", "insight_spans", ["definition_id", "started_at"])
    op.create_table(
        "insight_progress",
        sa.Column("case_id", CaseId, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("case_id", name="pk_insight_progress"),
    )
    op.create_table(
        "insight_baselines",
        sa.Column("id", CaseId, primary_key=True, autoincrement=True),
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("period", sa.String(7)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.UniqueConstraint("definition_id", "step", "kind", "period", name="uq_insight_baselines_period"),
    )
    op.create_index("ix_insight_baselines", "insight_baselines", ["definition_id", "step", "id"])


def downgrade() -> None:
    op.drop_table("insight_baselines")
    op.drop_table("insight_progress")
    op.drop_index("ix_insight_spans_definition", "insight_spans")
    op.drop_table("insight_spans")
    op.drop_index("ix_insight_steps_definition", "insight_steps")
    op.drop_table("insight_steps")
