"""Several coordinators on one database: the `leaders` table; PostgreSQL storage settings for
the hot `jobs` table

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

`leaders` holds one row per maintenance service: who runs it and until when (see
maintenance/leader.py).

Every job is updated several times (claim, heartbeats, receipt) and deleted by the pruner, so
under churn `jobs` bloats unless old row versions are reclaimed quickly:
- fillfactor 80 leaves a fifth of each page free, so that an update of a column no index
  covers (lease_expires_at by a heartbeat, checkpoint) can stay on its page as a HOT update,
  with no new index entries;
- autovacuum runs after 2 % of the rows changed (instead of 20 %) and analyzes after 1 %,
  with no cost delay, so that dead versions are reclaimed while the table is busy, and the
  planner keeps an up-to-date picture of how many jobs wait (the dispatch index is used).
The other half of the bargain is in the code: short transactions (one group commit per
writer hop, claims with SKIP LOCKED) and a pruner that deletes in bounded batches.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_SETTINGS = (
    "fillfactor = 80",
    "autovacuum_vacuum_scale_factor = 0.02",
    "autovacuum_analyze_scale_factor = 0.01",
    "autovacuum_vacuum_cost_delay = 0",
)


def upgrade() -> None:
    op.create_table(
        "leaders",
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE jobs SET ({', '.join(_SETTINGS)})")


def downgrade() -> None:
    op.drop_table("leaders")
    if op.get_bind().dialect.name != "postgresql":
        return
    names = ", ".join(setting.split(" = ")[0] for setting in _SETTINGS)
    op.execute(f"ALTER TABLE jobs RESET ({names})")
