"""Log-in, roles and tokens over HTTP with ``LABELLOOP_AUTH__ENABLED=true`` (contract 1.2 and 2.11).

The role matrix walks every route of the running server against ``ROUTE_ROLES`` with each role, an
anonymous caller and a forged token; the rest follow one user's tokens through expiry, revocation,
a password change and being disabled.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
import requests

from labelloop.api import PUBLIC, ROUTE_ROLES
from labelloop.auth import ROLES, UserStore, includes
from labelloop.settings import AuthSettings
from tests.support.servers import LiveServer

PASSWORD = "correct horse battery staple"
#: One user per role: user, annotator, reviewer, admin.
ROLE_USERS = {role: role.removeprefix("monailabel-") for role in ROLES}
# Values for the route templates' parameters: nothing by these names exists, so allowed calls answer
# 404/422 or an empty 200 and change nothing that matters.
PATH_VALUES = {
    "model": "nosuchmodel",
    "strategy": "random",
    "session_id": "nosuchsession",
    "task_id": "nosuchtask",
    "version": "1",
    "method": "nosuchmethod",
    "path": "studies",
    "patient_id": "nosuchpatient",
}


@pytest.fixture
def auth_server(
    make_server: Callable[..., LiveServer],
    database_url: str | None,
    users_of: Callable[[LiveServer], UserStore],
) -> LiveServer:
    server = make_server(database_url, auth=AuthSettings(enabled=True, token_expiry_s=600))
    store = users_of(server)
    for role, name in ROLE_USERS.items():
        store.add(name, [role], PASSWORD)
    return server


def login(server: LiveServer, name: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(
        f"{server.url}/auth/token",
        data={"username": name, "password": password, "grant_type": "password"},
        timeout=30,
    )


def bearer(server: LiveServer, name: str) -> dict[str, str]:
    answer = login(server, name)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _url(server: LiveServer, path: str) -> str:
    return server.url + re.sub(r"\{(\w+)(:path)?\}", lambda m: PATH_VALUES[m[1]], path)


def test_every_route_answers_each_role_as_the_matrix_says(
    make_server: Callable[..., LiveServer], users_of: Callable[[LiveServer], UserStore]
) -> None:
    server = make_server(auth=AuthSettings(enabled=True))
    store = users_of(server)
    for role, name in ROLE_USERS.items():
        store.add(name, [role], PASSWORD)
    headers = {role: bearer(server, name) for role, name in ROLE_USERS.items()}
    forged = jwt.encode(
        {"sub": "admin", "iss": "labelloop", "exp": time.time() + 60},
        "a guess at the key, 32 bytes long",
        algorithm="HS256",
    )
    wrong: list[str] = []
    # Deleting and stopping last, so the other routes still find what they look for.
    for (method, path), required in sorted(ROUTE_ROLES.items(), key=lambda kv: kv[0][0] == "DELETE"):
        url = _url(server, path)
        anonymous = requests.request(method, url, timeout=60)
        if anonymous.status_code != 401 or anonymous.headers.get("www-authenticate") != "Bearer":
            wrong.append(f"{method} {path} anonymous: {anonymous.status_code}")
        elif method != "HEAD" and anonymous.json() != {"detail": "Not authenticated"}:
            wrong.append(f"{method} {path} anonymous body: {anonymous.text}")
        if (
            requests.request(
                method, url, headers={"Authorization": f"Bearer {forged}"}, timeout=60
            ).status_code
            != 401
        ):
            wrong.append(f"{method} {path} accepted a token this server did not sign")
        for role in ROLES:
            answer = requests.request(method, url, headers=headers[role], timeout=120)
            if includes([role], required):
                if answer.status_code in (401, 403):
                    wrong.append(f"{method} {path} {role}: {answer.status_code} {answer.text[:100]}")
            elif answer.status_code != 403 or (
                method != "HEAD"
                and answer.json() != {"detail": f'Role "{required}" is required to perform this action'}
            ):
                wrong.append(f"{method} {path} {role}: {answer.status_code}, expected 403")
    assert not wrong, "\n".join(wrong)
    for method, path in PUBLIC:
        assert requests.request(method, _url(server, path), timeout=30).status_code not in (401, 403)


def test_login_answers_oauth2_token_and_token_valid_names_user_and_roles(auth_server: LiveServer) -> None:
    assert requests.get(f"{auth_server.url}/auth/", timeout=30).json()["enabled"] is True
    answer = login(auth_server, "annotator")
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "annotator" and claims["exp"] - claims["iat"] == 600
    valid = requests.get(
        f"{auth_server.url}/auth/token/valid",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=30,
    )
    assert valid.status_code == 200
    assert valid.json()["username"] == "annotator"
    assert valid.json()["roles"] == ["monailabel-annotator"]


def test_wrong_password_is_401_and_logins_are_limited_per_user_and_address(auth_server: LiveServer) -> None:
    for _ in range(10):
        failed = login(auth_server, "user", "wrong password")
        assert failed.status_code == 401 and failed.headers["www-authenticate"] == "Bearer"
        assert failed.json() == {"detail": "Invalid user name or password"}
    assert login(auth_server, "user", "wrong password").status_code == 429
    assert login(auth_server, "user").status_code == 429  # even the right password, for a minute
    assert login(auth_server, "admin").status_code == 200  # another user from the same address is not held
    assert login(auth_server, "nobody", "x").json() == {"detail": "Invalid user name or password"}


def test_auth_off_keeps_auth_routes_404_and_every_call_open(sqlite_server: LiveServer) -> None:
    assert requests.get(f"{sqlite_server.url}/auth/", timeout=30).status_code == 404
    assert requests.post(f"{sqlite_server.url}/auth/token", timeout=30).status_code == 404
    assert requests.get(f"{sqlite_server.url}/datastore/", timeout=30).status_code == 200


def test_a_disabled_user_and_a_new_password_void_tokens_at_once(
    auth_server: LiveServer, users_of: Callable[[LiveServer], UserStore]
) -> None:
    store = users_of(auth_server)
    annotator, admin = bearer(auth_server, "annotator"), bearer(auth_server, "admin")
    url = f"{auth_server.url}/datastore/"
    assert requests.get(url, headers=annotator, timeout=30).status_code == 200
    store.set_password("annotator", "another long password")
    assert requests.get(url, headers=annotator, timeout=30).status_code == 401
    assert login(auth_server, "annotator").status_code == 401
    assert login(auth_server, "annotator", "another long password").status_code == 200

    assert requests.get(url, headers=admin, timeout=30).status_code == 200
    store.disable("admin")
    assert requests.get(url, headers=admin, timeout=30).json() == {"detail": "Could not validate credentials"}
    assert login(auth_server, "admin").status_code == 401


def test_tokens_expire(
    make_server: Callable[..., LiveServer], users_of: Callable[[LiveServer], UserStore]
) -> None:
    server = make_server(auth=AuthSettings(enabled=True, token_expiry_s=60))
    users_of(server).add("annotator", ["monailabel-annotator"], PASSWORD)
    token = login(server, "annotator").json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    secret = next(k for k in _keys(server.data_dir) if k[0] == jwt.get_unverified_header(token)["kid"])[1]
    # The same claims, signed with the server's own key, but expired a minute ago.
    expired = jwt.encode(
        {**claims, "iat": claims["iat"] - 120, "exp": claims["iat"] - 60},
        secret,
        algorithm="HS256",
        headers={"kid": jwt.get_unverified_header(token)["kid"]},
    )
    url = f"{server.url}/datastore/"
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
    assert requests.get(url, headers={"Authorization": f"Bearer {expired}"}, timeout=30).status_code == 401


def _keys(data_dir: Path) -> list[tuple[str, bytes]]:
    import base64
    import json

    raw = json.loads((data_dir / "auth" / "signing-keys.json").read_text())
    return [(k["kid"], base64.b64decode(k["secret"])) for k in raw["keys"]]


def test_signing_keys_are_private_and_rotation_keeps_the_previous_key(
    auth_server: LiveServer, users_of: Callable[[LiveServer], UserStore]
) -> None:
    from labelloop.auth import SigningKeys

    before = bearer(auth_server, "user")
    path = auth_server.data_dir / "auth" / "signing-keys.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    for written in (auth_server.data_dir / "run").glob("settings-*.json"):
        assert written.stat().st_mode & 0o777 == 0o600  # the workers' settings
        assert path.read_text() not in written.read_text()
    keys = SigningKeys(path)
    keys.rotate()
    after = bearer(auth_server, "user")
    url = f"{auth_server.url}/info/"
    assert requests.get(url, headers=before, timeout=30).status_code == 200  # the previous key still verifies
    assert requests.get(url, headers=after, timeout=30).status_code == 200
    keys.rotate()  # a second rotation retires the key the first token was signed with
    assert requests.get(url, headers=before, timeout=30).status_code == 401
    assert requests.get(url, headers=after, timeout=30).status_code == 200


def test_api_tokens_work_until_revoked_or_expired(
    auth_server: LiveServer, users_of: Callable[[LiveServer], UserStore]
) -> None:
    store = users_of(auth_server)
    token, record = store.create_token("reviewer")
    short, _ = store.create_token("reviewer", expires_s=1.0)
    url = f"{auth_server.url}/datastore/dataset"
    answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert answer.status_code != 401 and answer.status_code != 403
    who = requests.get(
        f"{auth_server.url}/auth/token/valid", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert who.json()["username"] == "reviewer" and who.json()["via"] == "api_token"
    store.revoke_token(record.id)
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 401
    time.sleep(1.2)
    assert requests.get(url, headers={"Authorization": f"Bearer {short}"}, timeout=30).status_code == 401
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert requests.get(url, headers={"Authorization": f"Bearer {tampered}"}, timeout=30).status_code == 401


def test_anonymous_upload_is_refused_before_its_body_is_read(auth_server: LiveServer) -> None:
    import socket
    from urllib.parse import urlsplit

    before = auth_server.files()
    # Headers announcing a 10 MB multipart body, and no body: a server that waited for it would
    # time out; this one answers 401 at once.
    url = urlsplit(auth_server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(
            b"PUT /datastore/image?image=case1 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n--b\r\n"
        )
        head = conn.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 401"), head
    assert "www-authenticate: Bearer" in head.lower().replace("bearer", "Bearer")
    assert auth_server.files() == before


def test_work_is_attributed_to_the_user_who_logged_in(
    auth_server: LiveServer, volumes: Callable[..., Path]
) -> None:
    annotator = bearer(auth_server, "annotator")
    image, label = volumes("case1.nii.gz"), volumes("case1.nrrd", kind="label")
    with image.open("rb") as f:
        put = requests.put(
            f"{auth_server.url}/datastore/image?image=case1", files={"file": f}, headers=annotator, timeout=60
        )
    assert put.status_code == 200, put.text
    with label.open("rb") as f:
        saved = requests.put(
            f"{auth_server.url}/datastore/label?image=case1&tag=final",
            files={"label": f},
            data={"params": '{"client_id": "slicer-7"}'},
            headers=annotator,
            timeout=60,
        )
    assert saved.status_code == 200, saved.text
    versions = requests.get(
        f"{auth_server.url}/datastore/label/versions?image=case1&tag=final", headers=annotator, timeout=30
    ).json()
    newest = versions[-1] if isinstance(versions, list) else versions["versions"][-1]
    assert newest["author"] == "annotator" and newest["client_id"] == "slicer-7"


def test_the_readme_role_table_is_the_one_the_server_applies() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("<!-- role table:", 1)[1].split("<!-- end role table -->", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        method, path = cells[0].strip("`").split(" ", 1)
        allowed = [role for role, mark in zip(ROLES, cells[1:], strict=True) if mark == "✓"]
        assert allowed and allowed == list(ROLES[ROLES.index(allowed[0]) :]), f"{row}: not hierarchical"
        documented[(method, path)] = allowed[0]
    assert documented == ROUTE_ROLES


def test_with_auth_on_leases_are_the_users_whatever_client_id_says(
    auth_server: LiveServer, users_of: Callable[[LiveServer], UserStore], volumes: Callable[..., Path]
) -> None:
    users_of(auth_server).add("other", ["monailabel-annotator"], PASSWORD)
    ann, other, reviewer = (
        bearer(auth_server, "annotator"),
        bearer(auth_server, "other"),
        bearer(auth_server, "reviewer"),
    )
    for case in ("case1", "case2"):
        with volumes(f"{case}.nii.gz").open("rb") as f:
            put = requests.put(
                f"{auth_server.url}/datastore/image?image={case}", files={"file": f}, headers=ann, timeout=60
            )
        assert put.status_code == 200
    # The annotator's client claims to be someone else: the lease is still the annotator's.
    leased = requests.post(
        f"{auth_server.url}/activelearning/random", json={"client_id": "other"}, headers=ann, timeout=30
    ).json()
    leases = requests.get(f"{auth_server.url}/activelearning/leases", headers=reviewer, timeout=30).json()
    assert [(lease["image"], lease["holder"]) for lease in leases] == [(leased["id"], "annotator")]
    # Another annotator cannot give it back in the annotator's name ...
    stolen = requests.delete(
        f"{auth_server.url}/activelearning/lease",
        params={"image": leased["id"], "client_id": "annotator"},
        headers=other,
        timeout=30,
    )
    assert stolen.status_code == 404 and "'other' holds no lease" in stolen.json()["detail"]
    # ... and is handed the other image, not the leased one.
    second = requests.post(
        f"{auth_server.url}/activelearning/random", json={"client_id": "annotator"}, headers=other, timeout=30
    )
    assert second.json()["id"] != leased["id"]
    with volumes("label.nrrd", kind="label").open("rb") as f:
        saved = requests.put(
            f"{auth_server.url}/datastore/label?image={leased['id']}&tag=final",
            files={"label": f},
            data={"params": '{"client_id": "other"}'},
            headers=ann,
            timeout=60,
        ).json()
    assert saved.get("lease_ended") is True, saved
    assert (
        requests.get(f"{auth_server.url}/activelearning/leases", headers=reviewer, timeout=30).json()[0][
            "holder"
        ]
        == "other"
    )


def test_sessions_record_who_made_them(auth_server: LiveServer, volumes: Callable[..., Path]) -> None:
    user = bearer(auth_server, "user")
    with volumes("s.nii.gz").open("rb") as f:
        made = requests.put(f"{auth_server.url}/session/", files={"files": f}, headers=user, timeout=60)
    assert made.status_code == 200, made.text
    assert made.json()["session_info"]["created_by"] == "user"


def test_cors_admits_only_the_configured_origins(make_server: Callable[..., LiveServer]) -> None:
    preflight = {"Access-Control-Request-Method": "DELETE"}
    default = make_server()
    evil = requests.get(f"{default.url}/datastore/", headers={"Origin": "http://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in evil.headers
    refused = requests.options(
        f"{default.url}/datastore/image", headers={"Origin": "http://evil.example", **preflight}, timeout=30
    )
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers

    listed = make_server(cors_origins=["https://ohif.hospital.example"], auth=AuthSettings(enabled=True))
    ok = requests.options(
        f"{listed.url}/datastore/image",
        headers={
            "Origin": "https://ohif.hospital.example",
            **preflight,
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=30,
    )
    assert ok.headers["access-control-allow-origin"] == "https://ohif.hospital.example"
    assert ok.headers["access-control-allow-credentials"] == "true"
    other = requests.get(f"{listed.url}/info/", headers={"Origin": "http://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in other.headers and other.status_code == 401

    anyone = make_server(cors_origins=["*"])
    star = requests.get(f"{anyone.url}/datastore/", headers={"Origin": "http://evil.example"}, timeout=30)
    assert star.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in star.headers, "never credentials for any origin"
