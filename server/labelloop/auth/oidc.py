"""``OidcVerifier``: bearer tokens of an external OpenID Connect issuer (Keycloak, Entra ID, ...).

The issuer's keys come from its discovery document (``{issuer}/.well-known/openid-configuration``,
then ``jwks_uri``) and are cached for ``oidc_jwks_cache_s``. A token signed with a key id the cache
does not hold refetches the keys once (the issuer rotated them), but at most every
``_REFETCH_MIN_S`` seconds, so a stream of made-up key ids cannot turn into a stream of requests to
the issuer. Only asymmetric algorithms are accepted, and only the one the key is for: a token that
says ``HS256`` or ``none`` is refused before any key is looked at.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from jwt.algorithms import get_default_algorithms

from labelloop.auth.roles import Principal
from labelloop.errors import AuthenticationError
from labelloop.settings import AuthSettings

__all__ = ["ALGORITHMS", "OidcVerifier"]

#: The signature algorithms accepted from an issuer (asymmetric only).
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_REFETCH_MIN_S = 1.0
_TIMEOUT_S = 10.0
_MAX_DOCUMENT_BYTES = 1 << 20


class OidcVerifier:
    """Checks an issuer's access tokens: signature (JWKS), ``iss``, ``exp``, ``aud`` when configured.

    Args:
        settings: ``oidc_issuer`` (required), ``oidc_audience``, the user-name and roles claims, the
            key cache lifetime.
        client: the HTTP client to fetch with (one with the default timeouts otherwise).
        clock: seconds since the epoch (tests move it).
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.oidc_issuer:
            raise ValueError("OidcVerifier needs settings.oidc_issuer")
        self.issuer = settings.oidc_issuer.rstrip("/")
        self._settings = settings
        self._client = client or httpx.Client(timeout=_TIMEOUT_S, follow_redirects=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._jwks_uri: str | None = None

    # ------------------------------------------------------------ keys

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self._client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > _MAX_DOCUMENT_BYTES:
                raise ValueError("document too large")
            document = json.loads(response.content)
        except (httpx.HTTPError, ValueError) as exc:
            raise AuthenticationError(f"Could not reach the identity provider: {exc}") from None
        if not isinstance(document, dict):
            raise AuthenticationError("The identity provider answered something that is not JSON object")
        return document

    def _refresh(self) -> None:
        """Fetch the discovery document (once) and the key set; caller holds the lock."""
        if self._jwks_uri is None:
            discovery = self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if str(discovery.get("issuer", "")).rstrip("/") != self.issuer:
                raise AuthenticationError("The identity provider's discovery document names another issuer")
            uri = discovery.get("jwks_uri")
            if not isinstance(uri, str) or not uri:
                raise AuthenticationError("The identity provider's discovery document has no jwks_uri")
            self._jwks_uri = uri
        keys: dict[str, jwt.PyJWK] = {}
        for entry in self._get_json(self._jwks_uri).get("keys", []):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "kid" not in entry:
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type or algorithm this build does not know
            if key.algorithm_name in ALGORITHMS:
                keys[str(entry["kid"])] = key
        self._keys = keys
        self._fetched_at = self._clock()

    def _key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            stale = now - self._fetched_at > self._settings.oidc_jwks_cache_s
            unknown = kid not in self._keys and now - self._fetched_at >= _REFETCH_MIN_S
            if stale or unknown:
                try:
                    self._refresh()
                except AuthenticationError:
                    if kid not in self._keys:
                        raise
                    # The issuer is unreachable: the keys it published last still verify its tokens.
                    self._fetched_at = now
            key = self._keys.get(kid)
        if key is None:
            raise AuthenticationError()
        return key

    # ------------------------------------------------------------ tokens

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; ``AuthenticationError`` for any other token."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError() from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS or alg not in get_default_algorithms() or not isinstance(kid, str):
            raise AuthenticationError()
        key = self._key(kid)
        if key.algorithm_name != alg:
            raise AuthenticationError()  # the key is for another algorithm: never let the token pick
        audience = self._settings.oidc_audience
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.issuer,
                audience=audience,
                options={"require": ["exp", "iat", "iss"], "verify_aud": audience is not None},
                leeway=5,
            )
        except jwt.PyJWTError:
            raise AuthenticationError() from None
        name = claims.get(self._settings.oidc_username_claim)
        if not isinstance(name, str) or not name:
            raise AuthenticationError(f"The token has no {self._settings.oidc_username_claim!r} claim")
        return Principal(name, frozenset(_roles(claims, self._settings.oidc_roles_claim)), "oidc")

    def close(self) -> None:
        self._client.close()


def _roles(claims: dict[str, Any], path: str) -> list[str]:
    """The strings at the dotted ``path`` of ``claims`` (``realm_access.roles``); none if absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return []
        value = value.get(part)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
