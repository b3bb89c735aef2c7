"""Per router: the deployer settings it was created with (template rootfs or image, accelerator), so that
every later command reaches it without being told again; and its last known status (created, running,
stopped), so that `vrpipe list` needs no deployer.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("routers", sa.Column("settings", sa.JSON, nullable=False, server_default="{}"))
    op.add_column("routers", sa.Column("status", sa.String(16), nullable=False, server_default="created"))


def downgrade() -> None:
    with op.batch_alter_table("routers") as batch:
        batch.drop_column("status")
        batch.drop_column("settings")
