"""Routers (with their networks and pinned host key) and their rules.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("deployer", sa.String(32), nullable=False),
        sa.Column("control_address", sa.String(64), nullable=False),
        sa.Column("jump_host", sa.String(255)),
        sa.Column("host_key", sa.Text),
        sa.Column("networks", sa.JSON, nullable=False),
    )
    op.create_table(
        "rules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("router_id", sa.Integer, sa.ForeignKey("routers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("section", sa.String(32), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.UniqueConstraint("router_id", "section", "key"),
    )
    op.create_index("ix_rules_router_id", "rules", ["router_id"])


def downgrade() -> None:
    op.drop_table("rules")
    op.drop_table("routers")
