"""``Auth``: who a request acts for. Log-in with a password, the tokens this server signs, API tokens,
an external OIDC issuer's tokens; failed log-ins limited per user and address.

With auth off every request acts for ``settings.user`` with every role, as MONAI Label does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

from labelloop.auth.audit import AuditTrail
from labelloop.auth.keys import SigningKeys
from labelloop.auth.oidc import OidcVerifier
from labelloop.auth.roles import ROLES, Principal
from labelloop.auth.users import TOKEN_PREFIX, UserStore
from labelloop.db import Database
from labelloop.errors import AuthenticationError, NotAuthenticatedError, TooManyAttemptsError
from labelloop.settings import AuthSettings

__all__ = ["AccessToken", "Auth", "ISSUER"]

#: The ``iss`` of the tokens this server signs (an OIDC issuer's tokens carry its URL instead).
ISSUER = "labelloop"
_ALGORITHM = "HS256"


@dataclass(frozen=True)
class AccessToken:
    """What ``POST /auth/token`` answers (OAuth 2's token response)."""

    access_token: str
    token_type: str
    expires_in: int


class Auth:
    """Log-ins and bearer tokens for one server (its users live in ``db``, its keys under ``data_dir``)."""

    def __init__(
        self,
        settings: AuthSettings,
        db: Database,
        data_dir: Path,
        audit: AuditTrail,
        *,
        anonymous_user: str = "admin",
        oidc: OidcVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.users = UserStore(db, clock)
        self.keys = SigningKeys(data_dir / "auth" / "signing-keys.json")
        self._audit = audit
        self._anonymous = Principal(anonymous_user, frozenset(ROLES), "anonymous")
        self._oidc = oidc
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def anonymous(self) -> Principal:
        """Who a request acts for while auth is off (or on a public route): the configured user."""
        return self._anonymous

    # ------------------------------------------------------------ log-in

    def login(self, username: str, password: str, address: str | None) -> AccessToken:
        """Check the password and sign an access token; every attempt goes to the audit trail.

        ``TooManyAttemptsError`` once ``login_failures_per_minute`` attempts for this user from this
        address failed in the last minute (counted in the audit trail, so replicas share the count).
        """
        since = self._clock() - 60.0
        failures = self._audit.count(
            action="login", user=username, address=address, outcome="failure", since=since
        )
        if failures >= self.settings.login_failures_per_minute:
            self._audit.record(
                "login", user=username, outcome="failure", address=address, details={"reason": "rate limited"}
            )
            raise TooManyAttemptsError()
        user = self.users.check_password(username, password)
        if user is None:
            self._audit.record(
                "login",
                user=username,
                outcome="failure",
                address=address,
                details={"reason": "bad credentials"},
            )
            raise AuthenticationError("Invalid user name or password")
        self._audit.record("login", user=username, address=address)
        return self.sign(user.name, user.token_version)

    def sign(self, username: str, token_version: int) -> AccessToken:
        """An access token for ``username`` that lasts ``token_expiry_s``."""
        now = int(self._clock())
        key = self.keys.current
        claims = {
            "iss": ISSUER,
            "sub": username,
            "preferred_username": username,
            "iat": now,
            "exp": now + self.settings.token_expiry_s,
            "ver": token_version,
        }
        token = jwt.encode(claims, key.secret, algorithm=_ALGORITHM, headers={"kid": key.kid})
        return AccessToken(token, "Bearer", self.settings.token_expiry_s)

    # ------------------------------------------------------------ requests

    def principal(self, authorization: str | None) -> Principal:
        """Who a request with this ``Authorization`` header acts for.

        ``NotAuthenticatedError`` without a bearer token, ``AuthenticationError`` for one that is not
        valid (expired, revoked, a disabled user's, signed by someone else).
        """
        if not self.enabled:
            return self._anonymous
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticatedError()
        if token.startswith(TOKEN_PREFIX):
            user = self.users.check_token(token)
            return Principal(user.name, frozenset(user.roles), "api_token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError() from None
        if header.get("alg") == _ALGORITHM:
            return self._own(token, str(header.get("kid", "")))
        if self._oidc is not None:
            return self._oidc.verify(token)
        raise AuthenticationError()

    def _own(self, token: str, kid: str) -> Principal:
        key = self.keys.find(kid)
        if key is None:
            raise AuthenticationError()
        try:
            claims = jwt.decode(
                token,
                key.secret,
                algorithms=[_ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
                leeway=5,
            )
        except jwt.PyJWTError:
            raise AuthenticationError() from None
        try:
            user = self.users.get(str(claims["sub"]))
        except Exception:
            raise AuthenticationError() from None
        if not user.active or claims.get("ver") != user.token_version:
            raise AuthenticationError()  # disabled, or the password changed since it was signed
        # Roles come from the database, not the token: a change applies to the next request.
        return Principal(user.name, frozenset(user.roles), "password")
