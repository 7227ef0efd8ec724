"""The Alembic migrations build exactly the schema that store/schema.py describes."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conveyor_server.store.migrate import upgrade_to_head
from conveyor_server.store.schema import metadata
from databases import PostgresServer


def test_migrated_database_matches_the_table_definitions(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with engine.begin() as conn:
        upgrade_to_head(conn)
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert differences == []


def test_migrated_postgresql_database_matches_the_table_definitions(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        upgrade_to_head(conn)
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        options = conn.scalar(sa.text("SELECT reloptions FROM pg_class WHERE relname = 'jobs'"))
    engine.dispose()
    postgres.drop_database(url)
    assert differences == []
    assert "fillfactor=80" in options
