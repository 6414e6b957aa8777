"""The lifecycle log made tamper-evident.

`lifecycle_actions` gains `prev_hash` and `hash`: each act is chained onto the one before it (its `prev_hash`
is that one's `hash`, unique, so two writers cannot fork the chain), the acts already logged are chained in
id order, and the database refuses UPDATE, DELETE and REPLACE on the table, like the audit trail's. An
`adopt` or trial act decides which version new cases start on: `audit verify` checks the chain and an anchor
holds its head.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import json
from datetime import UTC

import sqlalchemy as sa
from alembic import op

from sopflow.engine.audit import GENESIS
from sopflow.engine.store.lifecycle import ActionRow, action_hash
from sopflow.engine.store.tables import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

NAMES = ("id", "definition_id", "action", "versions", "actor", "role", "outcome", "reason", "detail")
ACTIONS = sa.table(
    "lifecycle_actions",
    *(sa.column(name) for name in NAMES),
    sa.column("at", UTCDateTime),
    sa.column("prev_hash"),
    sa.column("hash"),
)


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("lifecycle_actions") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=False, server_default=""))
    a = ACTIONS.c
    prev = GENESIS
    columns = [c for c in ACTIONS.c if c.name not in ("prev_hash", "hash")]
    for row in bind.execute(sa.select(*columns).order_by(a.id)).all():
        values = dict(row._mapping)
        at = values["at"] if values["at"].tzinfo is not None else values["at"].replace(tzinfo=UTC)
        parsed = {
            "versions": json.loads(values["versions"]),
            "detail": json.loads(values["detail"]),
            "at": at,
        }
        mine = action_hash(ActionRow(**{**values, **parsed}, prev_hash=prev).body())
        bind.execute(ACTIONS.update().where(a.id == values["id"]).values(prev_hash=prev, hash=mine))
        prev = mine
    op.create_index("ux_lifecycle_actions_prev", "lifecycle_actions", ["prev_hash"], unique=True)
    if bind.dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER lifecycle_actions_no_{action.lower()} BEFORE {action} ON lifecycle_actions "
                "BEGIN SELECT RAISE(ABORT, 'lifecycle_actions is append-only'); END"
            )
        op.execute(
            "CREATE TRIGGER lifecycle_actions_no_replace BEFORE INSERT ON lifecycle_actions "
            "WHEN EXISTS (SELECT 1 FROM lifecycle_actions WHERE id = NEW.id) "
            "BEGIN SELECT RAISE(ABORT, 'lifecycle_actions is append-only'); END"
        )
    elif bind.dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER lifecycle_actions_append_only BEFORE UPDATE OR DELETE ON lifecycle_actions "
            "FOR EACH ROW EXECUTE FUNCTION sopflow_append_only()"
        )
        op.execute(
            "CREATE TRIGGER lifecycle_actions_no_truncate BEFORE TRUNCATE ON lifecycle_actions "
            "FOR EACH STATEMENT EXECUTE FUNCTION sopflow_append_only()"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("update", "delete", "replace"):
            op.execute(f"DROP TRIGGER IF EXISTS lifecycle_actions_no_{name}")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS lifecycle_actions_append_only ON lifecycle_actions")
        op.execute("DROP TRIGGER IF EXISTS lifecycle_actions_no_truncate ON lifecycle_actions")
    op.drop_index("ux_lifecycle_actions_prev", "lifecycle_actions")
    with op.batch_alter_table("lifecycle_actions") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
