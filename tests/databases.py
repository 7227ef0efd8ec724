"""The databases the store conformance suite runs on: SQLite (a file per test) and PostgreSQL
(the local server on 127.0.0.1:5432, user postgres, trust auth; CONVEYOR_TEST_PG overrides).

PostgreSQL: one database per test session, migrated once, emptied before each test. Measured
here (PostgreSQL 15, 2 cores): CREATE DATABASE from a template 70 ms and DROP DATABASE 330 ms
(medians of 5), against 0.1 ms to DELETE the rows a test leaves; a database per test would
add about two minutes to the suite. Tests that need a database of their own (migrations,
several coordinators) use `PostgresServer.create_database`."""

from __future__ import annotations

import itertools
import os

import sqlalchemy as sa
from conveyor_server.store.migrate import upgrade_to_head

PG_ADMIN_URL = os.environ.get(
    "CONVEYOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# The database kinds of the conformance suite (the db_kind fixture's values).
DB_KINDS = ("sqlite", "postgresql")
# Tables emptied between tests, children first (no foreign keys today; the order is safe).
_KEPT_TABLES = {"alembic_version"}


class PostgresServer:
    """Creates and drops test databases on one PostgreSQL server. Fails loudly when the
    server cannot be reached: a PostgreSQL test that skips would hide a broken store."""

    def __init__(self, admin_url: str = PG_ADMIN_URL) -> None:
        self._admin_url = sa.engine.make_url(admin_url)
        self._admin = sa.create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        self._names = (f"conveyor_test_{os.getpid()}_{n}" for n in itertools.count())
        self._created: list[str] = []
        self._session_url: str | None = None
        self._tables: list[str] = []

    def url_of(self, name: str) -> str:
        return self._admin_url.set(database=name).render_as_string(hide_password=False)

    def create_database(self) -> str:
        """A new, empty database (the store migrates it on open); dropped by close()."""
        name = next(self._names)
        try:
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except sa.exc.OperationalError as exc:
            raise RuntimeError(
                f"PostgreSQL at {self._admin_url.render_as_string()} cannot be reached "
                f"({type(exc.orig).__name__}); .ci/run starts it: pg_ctlcluster "
                "--skip-systemctl-redirect <version> main start"
            ) from None
        self._created.append(name)
        return self.url_of(name)

    def drop_database(self, url: str) -> None:
        name = sa.engine.make_url(url).database
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._created:
            self._created.remove(name)

    def clean_database(self) -> str:
        """The session's shared database, migrated, with every row of the last test gone."""
        if self._session_url is None:
            self._session_url = self.create_database()
            engine = sa.create_engine(self._session_url)
            with engine.connect() as conn:
                upgrade_to_head(conn)
                conn.commit()
                self._tables = [
                    name for name in sa.inspect(conn).get_table_names() if name not in _KEPT_TABLES
                ]
            engine.dispose()
        engine = sa.create_engine(self._session_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("; ".join(f'DELETE FROM "{t}"' for t in self._tables))
        engine.dispose()
        return self._session_url

    def close(self) -> None:
        for name in list(self._created):
            self.drop_database(self.url_of(name))
        self._admin.dispose()
