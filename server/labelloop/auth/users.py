"""Users and their API tokens (the ``users`` and ``api_tokens`` tables)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, RowMapping, insert, select, update

from labelloop.auth.models import api_tokens, users
from labelloop.auth.passwords import hash_password, verify_password
from labelloop.auth.roles import parse_role
from labelloop.db import Database
from labelloop.errors import AuthenticationError, ConflictError, InvalidParamsError, UserNotFoundError

__all__ = ["ApiToken", "TOKEN_PREFIX", "USER_NAME", "User", "UserStore"]

#: User names: they end up in every record and log line, so no spaces, slashes or control characters.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
#: API tokens read ``ll_<id>_<secret>``: the id finds the row, the secret is compared by its hash.
TOKEN_PREFIX = "ll_"
_LAST_USED_EVERY_S = 60.0


@dataclass(frozen=True)
class User:
    """A user. ``token_version`` grows when their password changes or they are disabled."""

    name: str
    roles: tuple[str, ...]
    has_password: bool
    token_version: int
    created_at: float
    disabled_at: float | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True)
class ApiToken:
    id: str
    user: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class UserStore:
    """Add, list, disable users, set their passwords; issue, check and revoke API tokens."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    @staticmethod
    def _user(row: RowMapping) -> User:
        return User(
            name=row["name"],
            roles=tuple(row["roles"] or ()),
            has_password=row["password_hash"] is not None,
            token_version=int(row["token_version"]),
            created_at=float(row["created_at"]),
            disabled_at=row["disabled_at"],
        )

    def _row_in(self, conn: Connection, name: str, *, lock: bool = False) -> RowMapping:
        query = select(users).where(users.c.name == name)
        row = conn.execute(query.with_for_update() if lock else query).mappings().first()
        if row is None:
            raise UserNotFoundError(f"No user '{name}'")
        return row

    # ------------------------------------------------------------ users

    def add(self, name: str, roles: Iterable[str], password: str | None = None) -> User:
        """A new user with ``roles`` (MONAI Label's names) and, optionally, a password."""
        if not USER_NAME.fullmatch(name):
            raise InvalidParamsError(
                f"'{name}' is not a valid user name: letters, digits and . _ @ - (first a letter or digit)"
            )
        checked = []
        for role in roles:
            try:
                checked.append(parse_role(role))
            except ValueError as exc:
                raise InvalidParamsError(str(exc)) from None
        if not checked:
            raise InvalidParamsError("A user needs at least one role")
        hashed = hash_password(password) if password is not None else None
        now = self._clock()
        with self._db.write() as conn:
            if conn.execute(select(users.c.name).where(users.c.name == name)).first() is not None:
                raise ConflictError(f"User '{name}' exists already")
            conn.execute(
                insert(users).values(
                    name=name,
                    password_hash=hashed,
                    roles=sorted(set(checked)),
                    token_version=0,
                    created_at=now,
                    updated_at=now,
                    disabled_at=None,
                )
            )
            return self._user(self._row_in(conn, name))

    def get(self, name: str) -> User:
        with self._db.read() as conn:
            return self._user(self._row_in(conn, name))

    def all(self) -> list[User]:
        with self._db.read() as conn:
            return [self._user(r) for r in conn.execute(select(users).order_by(users.c.name)).mappings()]

    def disable(self, name: str) -> User:
        """Disable ``name``: their tokens (signed or API) stop working at once."""
        with self._db.write() as conn:
            row = self._row_in(conn, name, lock=True)
            now = self._clock()
            conn.execute(
                update(users)
                .where(users.c.name == name)
                .values(
                    disabled_at=row["disabled_at"] or now,
                    updated_at=now,
                    token_version=row["token_version"] + 1,
                )
            )
            return self._user(self._row_in(conn, name))

    def set_password(self, name: str, password: str) -> User:
        """A new password; tokens signed before it stop working."""
        hashed = hash_password(password)
        with self._db.write() as conn:
            row = self._row_in(conn, name, lock=True)
            conn.execute(
                update(users)
                .where(users.c.name == name)
                .values(
                    password_hash=hashed, updated_at=self._clock(), token_version=row["token_version"] + 1
                )
            )
            return self._user(self._row_in(conn, name))

    def check_password(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs and they are active, else ``None`` (same cost either way)."""
        with self._db.read() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).mappings().first()
        stored = row["password_hash"] if row is not None else None
        if not verify_password(stored, password) or row is None:
            return None
        user = self._user(row)
        return user if user.active else None

    # ------------------------------------------------------------ API tokens

    def create_token(self, name: str, expires_s: float | None = None) -> tuple[str, ApiToken]:
        """A new API token for ``name``: the token string (shown once, never stored) and its record."""
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self._clock()
        with self._db.write() as conn:
            self._row_in(conn, name)
            conn.execute(
                insert(api_tokens).values(
                    id=token_id,
                    user_name=name,
                    secret_sha256=_sha256(secret),
                    created_at=now,
                    expires_at=now + expires_s if expires_s is not None else None,
                )
            )
        return f"{TOKEN_PREFIX}{token_id}_{secret}", self.token(token_id)

    def token(self, token_id: str) -> ApiToken:
        with self._db.read() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).mappings().first()
        if row is None:
            raise UserNotFoundError(f"No API token '{token_id}'")
        return ApiToken(
            row["id"],
            row["user_name"],
            row["created_at"],
            row["expires_at"],
            row["revoked_at"],
            row["last_used_at"],
        )

    def tokens(self, name: str) -> list[ApiToken]:
        with self._db.read() as conn:
            ids = [r.id for r in conn.execute(select(api_tokens.c.id).where(api_tokens.c.user_name == name))]
        return [self.token(i) for i in ids]

    def revoke_token(self, token_id: str) -> ApiToken:
        """Revoke an API token by its id (the part after ``ll_``); it stops working at once."""
        with self._db.write() as conn:
            result = conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
        if not result.rowcount:
            self.token(token_id)  # unknown: not found; known: already revoked, which is fine
        return self.token(token_id)

    def check_token(self, token: str) -> User:
        """The active user an API token belongs to; ``AuthenticationError`` for any other token."""
        body = token.removeprefix(TOKEN_PREFIX)
        token_id, _, secret = body.partition("_")
        with self._db.read() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).mappings().first()
            owner = (
                conn.execute(select(users).where(users.c.name == row["user_name"])).mappings().first()
                if row
                else None
            )
        now = self._clock()
        valid = (
            row is not None
            and owner is not None
            and hmac.compare_digest(row["secret_sha256"], _sha256(secret))
            and row["revoked_at"] is None
            and (row["expires_at"] is None or row["expires_at"] > now)
            and owner["disabled_at"] is None
        )
        if not valid or owner is None or row is None:
            raise AuthenticationError()
        if row["last_used_at"] is None or now - row["last_used_at"] >= _LAST_USED_EVERY_S:
            # At most one write a minute per token, not one per request.
            with self._db.write() as conn:
                conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now))
        return self._user(owner)
