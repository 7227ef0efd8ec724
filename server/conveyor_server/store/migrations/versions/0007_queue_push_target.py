"""queues.push_target (a push queue's target, a serialized conveyor.v1.PushTarget)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.add_column(sa.Column("push_target", sa.LargeBinary))


def downgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.drop_column("push_target")
