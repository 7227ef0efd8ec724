"""The store's one namespace filter: rows whose stored name (a queue, schedule or task type
name) belongs to a namespace, as core/namespaces.py qualifies names. The store knows nothing
else of namespaces; the core qualifies every name before it gets here."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from conveyor_server.core.auth import DEFAULT_NAMESPACE
from conveyor_server.core.namespaces import SEPARATOR


def in_namespace(column: sa.ColumnElement[Any], namespace: str) -> sa.ColumnElement[bool]:
    """`default` holds the names without a separator; another namespace the names starting
    `namespace/`. Compared with substr, not LIKE: SQLite's LIKE ignores ASCII case, which
    would let namespace "Team" see "team"'s rows; substr compares exactly on both databases."""
    if namespace == DEFAULT_NAMESPACE:
        return ~column.contains(SEPARATOR)  # "/" is no LIKE wildcard: case plays no part
    prefix = namespace + SEPARATOR
    return sa.func.substr(column, 1, len(prefix)) == prefix
