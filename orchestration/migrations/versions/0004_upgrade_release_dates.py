"""Per repository URL and channel: the newest Release date a router was served (in-place upgrades refuse
an older one: rollback protection).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_dates",
        sa.Column("repo_url", sa.String(1000), primary_key=True),
        sa.Column("channel", sa.String(63), primary_key=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("release_dates")
