"""The Alembic migrations build exactly the schema that store/schema.py describes."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conveyor_server.store.migrate import upgrade_to_head
from conveyor_server.store.schema import metadata


def test_migrated_database_matches_the_table_definitions(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with engine.begin() as conn:
        upgrade_to_head(conn)
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert differences == []
