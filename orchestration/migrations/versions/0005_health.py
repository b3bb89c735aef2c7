"""Per router: its health as `vrpipe watch` last saw it (healthy or unhealthy, none before the first
check), when that check ran, how many checks in a row failed, and what the last failed check said.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("routers", sa.Column("health", sa.String(16), nullable=True))
    op.add_column("routers", sa.Column("health_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("routers", sa.Column("health_failures", sa.Integer, nullable=False, server_default="0"))
    op.add_column("routers", sa.Column("health_detail", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("routers") as batch:
        batch.drop_column("health_detail")
        batch.drop_column("health_failures")
        batch.drop_column("health_at")
        batch.drop_column("health")
