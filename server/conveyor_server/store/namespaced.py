"""The store's one namespace filter: rows whose stored name (a queue, schedule or task type
name) belongs to a namespace, as core/namespaces.py qualifies names. The store knows nothing
else of namespaces; the core qualifies every name before it gets here. Also the paging of a
listing that a caller's queue globs filter further (`filled_page`): the core hands the test
in, the store applies it while it reads, so pages stay full."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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


# Rows read per round while a filter may refuse some (a token's queue globs): one round for a
# usual page, and few when the filter refuses most rows. Names are short, and a schedule row
# is read in any case to test it, so a round costs little more than the rows it returns.
FILTER_BATCH = 200
Item = TypeVar("Item")


def starts_with_any(
    column: sa.ColumnElement[Any], prefixes: Sequence[str]
) -> sa.ColumnElement[bool] | None:
    """Names starting with one of `prefixes`, compared with substr as in_namespace is (exact
    case on both databases); None when one prefix is empty and so nothing is narrowed."""
    if not prefixes or not all(prefixes):
        return None
    return sa.or_(*(sa.func.substr(column, 1, len(prefix)) == prefix for prefix in prefixes))


def filled_page(
    read: Callable[[str | None, int], Sequence[Item]],
    name_of: Callable[[Item], str],
    keep: Callable[[Item], bool],
    after: str | None,
    limit: int,
) -> list[Item]:
    """The first `limit` items after `after` (in name order) that `keep` accepts: `read`
    returns the next rows after a name, and is asked again past the refused ones, so a
    page is never short while accepted rows follow. The cursor stays a name of the listing,
    so page tokens mean what they did without a filter."""
    kept: list[Item] = []
    cursor = after
    while len(kept) < limit:
        batch = read(cursor, FILTER_BATCH)
        for item in batch:
            if keep(item):
                kept.append(item)
                if len(kept) == limit:
                    break
        if len(batch) < FILTER_BATCH:
            break
        cursor = name_of(batch[-1])
    return kept
