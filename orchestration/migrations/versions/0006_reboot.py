"""Per router: why it needs a reboot, as its last upgrade or reboot found it (Debian's /run/reboot-required.pkgs
and what vr-restart-stale could not renew); empty when it needs none, null when never checked.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("upgrade_records", sa.Column("reboot_required", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("upgrade_records", "reboot_required")
