"""Notification claims carry their owner, so a delivery is recorded only by the claim's holder.

Until now a worker claimed a notification by pushing its next attempt past the lease, and recorded its
delivery whoever held it by then: two workers whose claims overlapped both wrote attempt N and the
second died on the delivery log's primary key. `notifications` gains `lease_owner` and `lease_until`;
recording an attempt checks the owner and the attempt count in the same UPDATE.

A notification claimed under the old scheme when the upgrade runs has no owner: its holder's record is
refused (the holder logs a lost claim) and the next worker delivers it again, which the webhook's
`Idempotency-Key` header lets the receiver recognise.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sopflow.engine.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(100)))
        batch.add_column(sa.Column("lease_until", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
