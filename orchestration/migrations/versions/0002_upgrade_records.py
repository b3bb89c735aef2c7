"""Per router: its package versions and the outcome and time of its last upgrade (in-place upgrades).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upgrade_records",
        sa.Column("router_id", sa.Integer, sa.ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("router_name", sa.String(63), nullable=False),
        sa.Column("packages", sa.JSON, nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("detail", sa.Text),
        sa.Column("upgraded_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("upgrade_records")
