"""Password hashing with Argon2id (argon2-cffi's defaults, RFC 9106's second recommendation)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from labelloop.errors import InvalidParamsError

__all__ = ["MIN_PASSWORD_LENGTH", "check_password_rules", "hash_password", "verify_password"]

MIN_PASSWORD_LENGTH = 8
_HASHER = PasswordHasher()
#: Verified against when a user does not exist, so an unknown name takes as long as a wrong password.
_DUMMY = _HASHER.hash("labelloop-no-such-user")


def check_password_rules(password: str) -> None:
    """Refuse passwords that are too short or too long (Argon2 takes any length; a megabyte is abuse)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidParamsError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise InvalidParamsError("A password has at most 1024 characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (``None``: no such user or no password; still costs a hash)."""
    if len(password) > 1024:
        return False
    try:
        return _HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
