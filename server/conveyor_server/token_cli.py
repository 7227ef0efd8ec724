"""`conveyor tokens create|list|revoke`: API tokens, straight in the database (no server needed;
every coordinator on that database sees a change within a second or two)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from conveyor_server.config import DEFAULT_DB_URL
from conveyor_server.core.auth import DEFAULT_NAMESPACE, Role, check_name, parse_roles
from conveyor_server.store.tokens import TokenExists, TokenStore

_QUEUE_GLOB_CHARS = 128


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tokens = commands.add_parser(
        "tokens",
        help="create, list and revoke API tokens (for conveyor serve --auth)",
        description="API tokens for `conveyor serve --auth`. Only a hash of each token is "
        "stored: `create` prints the token once, on the last line of its output.",
    )
    sub = tokens.add_subparsers(title="commands", metavar="COMMAND", required=True)
    create = sub.add_parser("create", help="create a token and print it once")
    create.add_argument("name", help="the principal's name (letters, digits, '.', '_', '-')")
    _db(create)
    create.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[r.value for r in Role],
        help="producer (enqueue, follow jobs), worker (lease, report) or admin (everything in "
        "its namespace); "
        "repeat for several",
    )
    create.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        help="the token's namespace: it sees and touches only the queues, jobs, schedules and "
        "task types of this namespace (default: %(default)s)",
    )
    create.add_argument(
        "--queues",
        action="append",
        default=[],
        metavar="GLOB",
        help="limit the token to queues matching this glob (fnmatch: *, ?, [..]); repeat or "
        "separate with commas; default: every queue",
    )
    create.set_defaults(handler=_create)
    listing = sub.add_parser("list", help="names, roles and namespaces (never a token)")
    _db(listing)
    listing.set_defaults(handler=_list)
    revoke = sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    _db(revoke)
    revoke.set_defaults(handler=_revoke)


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=DEFAULT_DB_URL, help="SQLAlchemy database URL (default: %(default)s)"
    )


def _globs(values: list[str]) -> tuple[str, ...]:
    globs = tuple(g.strip() for value in values for g in value.split(",") if g.strip())
    for glob in globs:
        if len(glob) > _QUEUE_GLOB_CHARS or not glob.isprintable():
            raise ValueError(f"--queues globs are at most {_QUEUE_GLOB_CHARS} printable characters")
    return globs


def _open(url: str) -> TokenStore:
    store = TokenStore(url)
    store.migrate()
    return store


def _create(args: argparse.Namespace) -> int:
    try:
        name = check_name(args.name, "NAME")
        namespace = check_name(args.namespace, "--namespace")
        roles = parse_roles(args.role)
        globs = _globs(args.queues)
    except ValueError as error:
        return _fail(f"tokens create: {error}")
    store = _open(args.db)
    try:
        token = store.create(name, namespace, roles, globs)
    except TokenExists as error:
        return _fail(f"tokens create: {error}")
    finally:
        store.close()
    print(
        f"created token {name!r}: roles {', '.join(sorted(r.value for r in roles))}, namespace "
        f"{namespace}, queues {', '.join(globs) or 'all'}"
    )
    print("It is shown only this once; pass it as token= or $CONVEYOR_TOKEN:")
    print(token)
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _open(args.db)
    try:
        rows = store.list()
    finally:
        store.close()
    table: list[tuple[Any, ...]] = [("NAME", "ROLES", "NAMESPACE", "QUEUES")]
    table += [(t.name, ",".join(t.roles), t.namespace, ",".join(t.queues) or "*") for t in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store = _open(args.db)
    try:
        revoked = store.revoke(args.name)
    finally:
        store.close()
    if not revoked:
        return _fail(f"tokens revoke: no token named {args.name[:128]!r}")
    print(f"revoked token {args.name!r}; coordinators refuse it within a second or two")
    return 0


def _fail(message: str) -> int:
    print(f"conveyor {message}", file=sys.stderr)
    return 1
