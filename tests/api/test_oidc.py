"""Bearer tokens of an external OpenID Connect issuer (Keycloak's claims), verified against the JWKS
of a real issuer the test runs on 127.0.0.1: caching, key rotation, and the tokens to refuse."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from labelloop.auth.oidc import OidcVerifier
from labelloop.errors import AuthenticationError
from labelloop.settings import AuthSettings
from tests.support.oidc import OidcIssuer, _Key
from tests.support.servers import LiveServer


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    running = OidcIssuer().start()
    yield running
    running.stop()


@pytest.fixture
def oidc_server(make_server: Callable[..., LiveServer], issuer: OidcIssuer) -> LiveServer:
    return make_server(auth=AuthSettings(enabled=True, oidc_issuer=issuer.url))


def _get(server: LiveServer, path: str, token: str) -> requests.Response:
    return requests.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_issuer_tokens_log_in_with_their_roles(oidc_server: LiveServer, issuer: OidcIssuer) -> None:
    token = issuer.token("dr.grey", ["monailabel-reviewer", "offline_access"])
    who = _get(oidc_server, "/auth/token/valid", token)
    assert who.status_code == 200
    assert who.json() == {
        "username": "dr.grey",
        "roles": ["monailabel-reviewer", "offline_access"],
        "via": "oidc",
    }
    assert _get(oidc_server, "/datastore/dataset", token).status_code not in (401, 403)  # reviewer may export
    denied = requests.delete(
        f"{oidc_server.url}/datastore/image?id=x", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert denied.status_code == 403  # only admins delete
    no_roles = issuer.token("visitor", [])
    assert _get(oidc_server, "/info/", no_roles).status_code == 403


def test_keys_are_cached_and_a_rotation_is_picked_up(oidc_server: LiveServer, issuer: OidcIssuer) -> None:
    for _ in range(5):
        assert _get(oidc_server, "/info/", issuer.token("a", ["monailabel-user"])).status_code == 200
    assert issuer.jwks_fetches == 1, "the key set is fetched once, then cached"
    old = issuer.token("a", ["monailabel-user"])
    issuer.rotate()
    time.sleep(1.1)  # at most one refetch a second, whatever key ids tokens make up
    new = issuer.token("a", ["monailabel-user"])
    assert _get(oidc_server, "/info/", new).status_code == 200, "a new key id refetches the key set"
    assert _get(oidc_server, "/info/", old).status_code == 200
    assert issuer.jwks_fetches == 2


def test_tokens_to_refuse(oidc_server: LiveServer, issuer: OidcIssuer) -> None:
    stranger = _Key.new()  # not published by the issuer
    public_pem = (
        issuer.keys[0]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    claims = {"iss": issuer.url, "iat": now, "exp": now + 300, "preferred_username": "x"}
    claims["realm_access"] = {"roles": ["monailabel-admin"]}  # type: ignore[assignment]
    refused = {
        "expired": issuer.token("x", ["monailabel-admin"], iat=now - 600, exp=now - 300),
        "another issuer": issuer.token("x", ["monailabel-admin"], iss="http://127.0.0.1:1/realms/evil"),
        "unpublished key": issuer.token(
            "x", ["monailabel-admin"], key=_Key(issuer.keys[0].kid, stranger.private)
        ),
        "unknown key id": issuer.token("x", ["monailabel-admin"], key=stranger),
        "no user name": issuer.token("", ["monailabel-admin"]),
        # Algorithm confusion: HS256 with the issuer's public key as the shared secret.
        "HS256 with the public key": _hs256(claims, public_pem, issuer.keys[0].kid),
        "alg none": jwt.encode(claims, None, algorithm="none", headers={"kid": issuer.keys[0].kid}),
    }
    for what, token in refused.items():
        answer = _get(oidc_server, "/info/", token)
        assert answer.status_code == 401, f"{what}: {answer.status_code}"
        assert answer.headers["www-authenticate"] == "Bearer"


def _hs256(claims: dict[str, object], secret: bytes, kid: str) -> str:
    """A token signed by hand (PyJWT itself refuses a PEM key as an HMAC secret)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def test_audience_and_claims_are_configurable(issuer: OidcIssuer) -> None:
    settings = AuthSettings(
        enabled=True,
        oidc_issuer=issuer.url,
        oidc_audience="labelloop",
        oidc_username_claim="email",
        oidc_roles_claim="resource_access.labelloop.roles",
    )
    verifier = OidcVerifier(settings)
    try:
        token = issuer.token(
            "ignored",
            [],
            aud="labelloop",
            email="grey@hospital.example",
            resource_access={"labelloop": {"roles": ["monailabel-annotator"]}},
        )
        principal = verifier.verify(token)
        assert principal.name == "grey@hospital.example" and principal.roles == {"monailabel-annotator"}
        with pytest.raises(AuthenticationError):
            verifier.verify(issuer.token("x", [], email="x@y", aud="account"))  # for another client
    finally:
        verifier.close()


def test_cached_keys_expire_and_an_unreachable_issuer_keeps_the_last_keys(issuer: OidcIssuer) -> None:
    now = [1_000.0]
    verifier = OidcVerifier(AuthSettings(oidc_issuer=issuer.url, oidc_jwks_cache_s=60), clock=lambda: now[0])
    try:
        token = issuer.token("a", ["monailabel-user"])
        verifier.verify(token)
        now[0] += 30
        verifier.verify(token)
        assert issuer.jwks_fetches == 1
        now[0] += 31
        verifier.verify(token)
        assert issuer.jwks_fetches == 2, "keys older than oidc_jwks_cache_s are fetched again"
        issuer.stop()
        now[0] += 120
        assert verifier.verify(token).name == "a", (
            "the issuer is down: the keys it published last still verify"
        )
    finally:
        verifier.close()
