"""A real OpenID Connect issuer on 127.0.0.1 for the tests: discovery, a JWKS endpoint, and RSA keys
it signs tokens with (Keycloak's claim layout). It counts the JWKS fetches and can rotate its key."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass
class _Key:
    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def new(cls) -> _Key:
        return cls(uuid.uuid4().hex[:12], rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}


@dataclass
class OidcIssuer:
    """Serves ``/realms/test/.well-known/openid-configuration`` and ``.../certs`` (JWKS)."""

    keys: list[_Key] = field(default_factory=lambda: [_Key.new()])
    jwks_fetches: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/realms/test"

    def start(self) -> OidcIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/realms/test/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/protocol/openid-connect/certs"}
                elif self.path == "/realms/test/protocol/openid-connect/certs":
                    issuer.jwks_fetches += 1
                    body = {"keys": [k.jwk() for k in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def rotate(self) -> None:
        """Publish a new key and sign with it; the old one stays published (as Keycloak does)."""
        self.keys.insert(0, _Key.new())

    def token(
        self,
        username: str,
        roles: list[str],
        *,
        lifetime_s: float = 300,
        key: _Key | None = None,
        **claims: Any,
    ) -> str:
        """An access token as Keycloak issues it: ``preferred_username``, ``realm_access.roles``."""
        now = int(time.time())
        body = {
            "iss": self.url,
            "sub": uuid.uuid4().hex,
            "aud": "account",
            "iat": now,
            "exp": now + int(lifetime_s),
            "preferred_username": username,
            "realm_access": {"roles": roles},
            **claims,
        }
        signer = key or self.keys[0]
        return jwt.encode(body, signer.private, algorithm="RS256", headers={"kid": signer.kid})
