"""Append-only orgs, and REPLACE refused on the append-only tables.

The org is what decides who may act, so its history is kept like the definitions': UPDATE, DELETE (and
on PostgreSQL TRUNCATE) are refused. On SQLite, `INSERT OR REPLACE` deletes the row it collides with
without firing DELETE triggers (unless a connection turns `recursive_triggers` on, which a tamperer's
would not), so each append-only table also gets a BEFORE INSERT trigger that refuses a key already
present. PostgreSQL has no REPLACE; `INSERT … ON CONFLICT DO UPDATE` fires the UPDATE triggers.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEYS = {
    "audit": ("case_id", "seq"),
    "definitions": ("definition_id", "version"),
    "delegations": ("id",),
    "orgs": ("id",),
}
"""Each append-only table and its primary key: a second row with the same key is a REPLACE."""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER orgs_no_{action.lower()} BEFORE {action} ON orgs "
                "BEGIN SELECT RAISE(ABORT, 'orgs is append-only'); END"
            )
        for table, key in KEYS.items():
            same = " AND ".join(f"{column} = NEW.{column}" for column in key)
            # Only this module's table and column names go into the statement.
            refuse = f"SELECT RAISE(ABORT, '{table} is append-only')"
            exists = f"EXISTS (SELECT 1 FROM {table} WHERE {same})"  # noqa: S608
            trigger = f"{table}_no_replace BEFORE INSERT ON {table}"
            op.execute(f"CREATE TRIGGER {trigger} WHEN {exists} BEGIN {refuse}; END")
    elif dialect == "postgresql":
        op.execute(
            "CREATE TRIGGER orgs_append_only BEFORE UPDATE OR DELETE ON orgs "
            "FOR EACH ROW EXECUTE FUNCTION sopflow_append_only()"
        )
        op.execute(
            "CREATE TRIGGER orgs_no_truncate BEFORE TRUNCATE ON orgs "
            "FOR EACH STATEMENT EXECUTE FUNCTION sopflow_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS orgs_no_update")
        op.execute("DROP TRIGGER IF EXISTS orgs_no_delete")
        for table in KEYS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_replace")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS orgs_append_only ON orgs")
        op.execute("DROP TRIGGER IF EXISTS orgs_no_truncate ON orgs")
