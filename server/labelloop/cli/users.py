"""``labelloop user | audit | keys``: people, API tokens, the audit chain and the signing keys.

Each works on the database ``serve`` uses (the same ``--data-dir`` / ``--database-url``) and may run
while servers are up: a disabled user or a revoked token stops working on their next request. Every
change is written to the audit trail as done by ``cli:<login name>``.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from labelloop.cli.common import DATABASE_FLAGS, add_settings_flags, configure_logging, settings_from
from labelloop.settings import Settings

__all__ = ["register"]

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float | None:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``never`` (``None``) as seconds."""
    if text == "never":
        return None
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30d, 12h, 2w or never")
    return float(int(match[1]) * _UNIT_S[match[2]])


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _read_password() -> str:
    """The password on stdin: its first line, without the line end (``printf %s pw |`` or a file)."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise SystemExit("error: --password-stdin got an empty password")
    return password


class _Context:
    """The database of the settings, migrated to head, with its users and audit trail."""

    def __init__(self, settings: Settings) -> None:
        from labelloop.auth import AuditTrail, UserStore
        from labelloop.db import Database

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.db = Database(settings.resolved_database_url)
        self.db.migrate()
        self.users = UserStore(self.db)
        self.audit = AuditTrail(self.db)

    def record(self, action: str, target: str, **details: Any) -> None:
        self.audit.record(action, user=_actor(), target=target, details=details)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z" if ts is not None else "-"


def _user_add(ctx: _Context, args: argparse.Namespace) -> int:
    password = _read_password() if args.password_stdin else None
    user = ctx.users.add(args.name, args.role, password)
    ctx.record("user.create", user.name, roles=list(user.roles), password=password is not None)
    print(
        f"added {user.name} with {', '.join(user.roles)}"
        + ("" if password else " (no password: API tokens only)")
    )
    return 0


def _user_list(ctx: _Context, _args: argparse.Namespace) -> int:
    rows = ctx.users.all()
    print(f"{'name':24} {'status':9} {'created':20} roles")
    for user in rows:
        status = "active" if user.active else "disabled"
        print(f"{user.name:24} {status:9} {_when(user.created_at):20} {', '.join(user.roles)}")
    return 0


def _user_disable(ctx: _Context, args: argparse.Namespace) -> int:
    user = ctx.users.disable(args.name)
    ctx.record("user.disable", user.name)
    print(f"disabled {user.name}: their tokens stop working now")
    return 0


def _user_set_password(ctx: _Context, args: argparse.Namespace) -> int:
    user = ctx.users.set_password(args.name, _read_password())
    ctx.record("user.password", user.name)
    print(f"new password for {user.name}: tokens signed before it stop working")
    return 0


def _user_token(ctx: _Context, args: argparse.Namespace) -> int:
    token, record = ctx.users.create_token(args.name, args.expires)
    ctx.record("token.create", f"{record.user}/{record.id}", expires_at=record.expires_at)
    print(token)
    print(
        f"API token {record.id} for {record.user}, expires {_when(record.expires_at)}; "
        "shown once, keep it secret (revoke with `labelloop user revoke-token ID`)",
        file=sys.stderr,
    )
    return 0


def _user_tokens(ctx: _Context, args: argparse.Namespace) -> int:
    print(f"{'id':18} {'created':20} {'expires':20} {'last used':20} status")
    for t in ctx.users.tokens(args.name):
        expired = t.expires_at is not None and t.expires_at <= time.time()
        status = "revoked" if t.revoked_at else "expired" if expired else "valid"
        print(
            f"{t.id:18} {_when(t.created_at):20} {_when(t.expires_at):20} {_when(t.last_used_at):20} {status}"
        )
    return 0


def _user_revoke_token(ctx: _Context, args: argparse.Namespace) -> int:
    from labelloop.auth import TOKEN_PREFIX

    token_id = args.token_id.removeprefix(TOKEN_PREFIX).partition("_")[0]
    record = ctx.users.revoke_token(token_id)
    ctx.record("token.revoke", f"{record.user}/{record.id}")
    print(f"revoked API token {record.id} of {record.user}")
    return 0


def _audit_verify(ctx: _Context, _args: argparse.Namespace) -> int:
    result = ctx.audit.verify()
    if result.ok:
        newest = ctx.audit.events(limit=1)
        head = f"; newest row {newest[0].seq}, hash {newest[0].hash}" if newest else ""
        print(f"audit chain intact: {result.rows} rows{head}")
        return 0
    print(f"audit chain broken at row {result.first_broken_seq}: {result.reason}", file=sys.stderr)
    return 1


def _keys_rotate(ctx: _Context, _args: argparse.Namespace) -> int:
    from labelloop.auth import SigningKeys

    key = SigningKeys(ctx.settings.data_dir / "auth" / "signing-keys.json").rotate()
    ctx.record("key.rotate", key.kid)
    print(
        f"new signing key {key.kid}: new tokens are signed with it; tokens signed with the previous key "
        "stay valid until they expire, those of the one before are void now"
    )
    return 0


def _command(run: Callable[[_Context, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from labelloop.errors import LabelloopError

        settings = settings_from(args)
        if args.log_level is not None:
            configure_logging(settings, to_file=False)
        else:
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        ctx = _Context(settings)
        try:
            return run(ctx, args)
        except LabelloopError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        finally:
            ctx.db.dispose()

    return command


def _sub(
    group: Any, name: str, run: Callable[[_Context, argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
    add_settings_flags(parser, DATABASE_FLAGS)
    parser.set_defaults(func=_command(run))
    return parser


def register(commands: Any) -> None:
    """Add ``user``, ``audit`` and ``keys`` to the ``labelloop`` command's sub-parsers."""
    from labelloop.auth import ROLES

    user = commands.add_parser("user", help="Add, list and disable users; passwords; API tokens")
    users = user.add_subparsers(dest="user_command", required=True)
    add = _sub(users, "add", _user_add, "Add a user with one or more roles")
    add.add_argument("name")
    add.add_argument("--role", action="append", required=True, choices=ROLES, help="May be given again")
    add.add_argument(
        "--password-stdin", action="store_true", help="Read the password from stdin's first line"
    )
    _sub(users, "list", _user_list, "List users with their roles")
    _sub(users, "disable", _user_disable, "Disable a user: their tokens stop working at once").add_argument(
        "name"
    )
    pw = _sub(users, "set-password", _user_set_password, "Set a password (read from stdin's first line)")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true", required=True)
    token = _sub(users, "token", _user_token, "Print a new long-lived API token for scripts")
    token.add_argument("name")
    token.add_argument(
        "--expires",
        type=parse_duration,
        default=parse_duration("90d"),
        help="30d, 12h, 2w or never (default 90d)",
    )
    _sub(users, "tokens", _user_tokens, "List a user's API tokens").add_argument("name")
    revoke = _sub(users, "revoke-token", _user_revoke_token, "Revoke an API token (its id, or the token)")
    revoke.add_argument("token_id")

    audit = commands.add_parser("audit", help="Check the audit trail's hash chain")
    audits = audit.add_subparsers(dest="audit_command", required=True)
    _sub(audits, "verify", _audit_verify, "Walk the hash chain; name the first row that breaks it (exit 1)")

    keys = commands.add_parser("keys", help="The keys the server signs access tokens with")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    _sub(
        key_commands,
        "rotate",
        _keys_rotate,
        "Sign with a new key; keep the previous one until its tokens expire",
    )
