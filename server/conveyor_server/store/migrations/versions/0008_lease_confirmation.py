"""jobs.lease_unconfirmed (lease confirmation)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

A Lease with confirm holds its jobs unconfirmed until a heartbeat or receipt for the lease
arrives; one whose short window passes unconfirmed is handed back without costing an attempt.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("lease_unconfirmed", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_unconfirmed")
