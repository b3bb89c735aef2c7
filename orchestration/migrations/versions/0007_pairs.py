"""Redundant pairs: one logical router (its name, VRRP router id, sync bridge and sync network) whose two
members are router rows of their own, each naming its pair and which member it is (a or b).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pairs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("sync_bridge", sa.String(15), nullable=False),
        sa.Column("sync_network", sa.String(18), nullable=False),
    )
    op.add_column("routers", sa.Column("pair_id", sa.Integer, nullable=True))
    op.add_column("routers", sa.Column("member", sa.String(1), nullable=True))
    op.create_index("ix_routers_pair_id", "routers", ["pair_id"])


def downgrade() -> None:
    op.drop_index("ix_routers_pair_id", "routers")
    with op.batch_alter_table("routers") as batch:
        batch.drop_column("member")
        batch.drop_column("pair_id")
    op.drop_table("pairs")
