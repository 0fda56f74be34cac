"""The auth package's tables: users, API tokens, and the hash-chained audit trail.

Changes here need an Alembic migration (``labelloop.db``). Times are float epoch seconds (UTC).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from labelloop.db import ID, metadata

__all__ = ["api_tokens", "audit_events", "users"]

# People and scripts that log in. ``roles`` is a JSON list of MONAI Label role names;
# ``token_version`` grows on every password change or disable, which voids the JWTs issued before.
users = Table(
    "users",
    metadata,
    Column("name", ID, primary_key=True),
    Column("password_hash", Text, nullable=True),
    Column("roles", JSON, nullable=False),
    Column("token_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("disabled_at", Float, nullable=True),
    CheckConstraint("token_version >= 0", name="token_version"),
)

# Long-lived API tokens for scripts: ``ll_<id>_<secret>``; only the secret's SHA-256 is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_name", ID, ForeignKey("users.name"), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
)
Index("ix_api_tokens_user", api_tokens.c.user_name)

# Append-only audit trail. Each row's ``hash`` is the SHA-256 of the previous row's hash and this
# row's own content, so editing or deleting a row breaks the chain from there on.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),
    Column("user", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("target", String(512), nullable=True),
    Column("address", String(64), nullable=True),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    CheckConstraint("outcome IN ('success', 'failure')", name="outcome"),
    CheckConstraint("seq >= 1", name="seq"),
)
Index("ix_audit_events_ts", audit_events.c.ts)
Index("ix_audit_events_user_action", audit_events.c.user, audit_events.c.action)
