"""Baselines made tamper-evident, and the report's rows of migrated cases derived again.

`insight_baselines` gains `prev_hash` and `hash`: each baseline is chained onto the one before it (its
`prev_hash` is that one's `hash`, unique, so two writers cannot fork the chain), the rows already there are
chained in id order, and the database refuses UPDATE, DELETE and REPLACE on the table, like the audit
trail's. `audit verify` checks the chain and an anchor holds its head.

A `migrate_case` record no longer ends the visit of the state it renames: the derived rows of every case
that has one are removed, so the next report derives them again from the trail.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sopflow.engine.audit import GENESIS
from sopflow.engine.store.insight import BaselineRow, baseline_hash
from sopflow.engine.store.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BASELINES = sa.table(
    "insight_baselines",
    *(sa.column(name) for name in ("id", "definition_id", "step", "seconds", "kind", "source", "period")),
    sa.column("created_at", UTCDateTime),
    sa.column("created_by"),
    sa.column("prev_hash"),
    sa.column("hash"),
)


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("insight_baselines") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=False, server_default=""))
    b = BASELINES.c
    prev = GENESIS
    columns = [c for c in BASELINES.c if c.name not in ("prev_hash", "hash")]
    for row in bind.execute(sa.select(*columns).order_by(b.id)).all():
        values = dict(row._mapping)
        mine = baseline_hash(BaselineRow(**values, prev_hash=prev).body())
        bind.execute(BASELINES.update().where(b.id == values["id"]).values(prev_hash=prev, hash=mine))
        prev = mine
    op.create_index("ux_insight_baselines_prev", "insight_baselines", ["prev_hash"], unique=True)
    if bind.dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER insight_baselines_no_{action.lower()} BEFORE {action} ON insight_baselines "
                "BEGIN SELECT RAISE(ABORT, 'insight_baselines is append-only'); END"
            )
        op.execute(
            "CREATE TRIGGER insight_baselines_no_replace BEFORE INSERT ON insight_baselines "
            "WHEN EXISTS (SELECT 1 FROM insight_baselines WHERE id = NEW.id) "
            "BEGIN SELECT RAISE(ABORT, 'insight_baselines is append-only'); END"
        )
    elif bind.dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER insight_baselines_append_only BEFORE UPDATE OR DELETE ON insight_baselines "
            "FOR EACH ROW EXECUTE FUNCTION sopflow_append_only()"
        )
        op.execute(
            "CREATE TRIGGER insight_baselines_no_truncate BEFORE TRUNCATE ON insight_baselines "
            "FOR EACH STATEMENT EXECUTE FUNCTION sopflow_append_only()"
        )
    audit = sa.table("audit", sa.column("case_id"), sa.column("event"))
    migrated = sa.select(audit.c.case_id).where(audit.c.event == "migrate_case").distinct()
    for derived in ("insight_steps", "insight_spans", "insight_progress"):
        table = sa.table(derived, sa.column("case_id"))
        op.execute(table.delete().where(table.c.case_id.in_(migrated)))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("update", "delete", "replace"):
            op.execute(f"DROP TRIGGER IF EXISTS insight_baselines_no_{name}")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS insight_baselines_append_only ON insight_baselines")
        op.execute("DROP TRIGGER IF EXISTS insight_baselines_no_truncate ON insight_baselines")
    op.drop_index("ux_insight_baselines_prev", "insight_baselines")
    with op.batch_alter_table("insight_baselines") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
