"""OHIF's site at ``/ohif/`` (``make ohif``): its files by name only, its pages, its config.

The browser tests (tests/web/test_ohif.py) open it against a real Orthanc; these check what the
server answers for each kind of path, with auth on.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
import requests

from labelloop.api.ohif import ohif_dir
from labelloop.auth import ANNOTATOR
from labelloop.settings import AuthSettings
from tests.conftest import ServerFactory
from tests.support.servers import LiveServer

PASSWORD = "a long enough password"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    if not (ohif_dir() / "index.html").is_file():
        pytest.fail(f"OHIF is not installed in {ohif_dir()}: run `make ohif`")


@pytest.fixture
def server(make_server: ServerFactory, users_of: object) -> LiveServer:
    live = make_server(auth=AuthSettings(enabled=True))
    users_of(live).add("ann", [ANNOTATOR], PASSWORD)  # type: ignore[operator]
    return live


def _raw_get(server: LiveServer, path: str) -> tuple[int, bytes]:
    """A GET of ``path`` exactly as written (no client-side normalisation of ``..``)."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_files_pages_and_config(server: LiveServer) -> None:
    wasm = next(ohif_dir().glob("*.wasm"))
    got = requests.get(f"{server.url}/ohif/{wasm.name}", timeout=10)
    assert got.status_code == 200 and got.headers["content-type"] == "application/wasm"
    assert got.content == wasm.read_bytes()
    bundle = next(ohif_dir().glob("app.bundle.*.js"))
    got = requests.get(f"{server.url}/ohif/{bundle.name}", timeout=10)
    assert got.headers["content-type"].startswith("text/javascript")
    assert b'__webpack_require__.p = "/ohif/"' in got.content, "the bundle loads its chunks from /ohif/"

    # Every page of OHIF's router is its index.html, rebased to /ohif/ (open without a log-in).
    index = (ohif_dir() / "index.html").read_bytes()
    assert b'window.PUBLIC_URL="/ohif/"' in index and b'src="/app' not in index
    assert requests.get(f"{server.url}/ohif", timeout=10, allow_redirects=False).status_code == 308

    # A file the site does not have is a 404 with a detail, not the index page.
    missing = requests.get(f"{server.url}/ohif/nothing-here.js", timeout=10)
    assert missing.status_code == 404 and "nothing-here.js" in missing.json()["detail"]
    # Paths that name a file outside the site, or its install stamp, never get that file.
    web = ohif_dir().parent
    outside = {
        "/ohif/../static/index.html": web / "static" / "index.html",
        "/ohif/%2e%2e/%2e%2e/__init__.py": web.parent / "__init__.py",
        "/ohif/.labelloop-ohif.json": ohif_dir() / ".labelloop-ohif.json",
    }
    for path, file in outside.items():
        assert file.is_file(), file
        status, body = _raw_get(server, path)
        assert body != file.read_bytes(), path
        assert status == 404 or (status == 200 and body == index), (path, status, body[:200])

    config = requests.get(f"{server.url}/ohif/app-config.js", timeout=10)
    assert config.status_code == 200 and config.headers["content-type"].startswith("text/javascript")
    text = config.text
    assert '"routerBasename": "/ohif"' in text and '"thumbnailRendering": "wadors"' in text
    assert 'origin + "/proxy/dicom/qido"' in text and 'origin + "/proxy/dicom/wado"' in text


def test_with_auth_on_ohif_asks_for_a_log_in_and_only_the_proxy_takes_the_cookie(server: LiveServer) -> None:
    # No session cookie: OHIF's pages send the browser to the dashboard's log-in, which comes back.
    first = requests.get(
        f"{server.url}/ohif/viewer?StudyInstanceUIDs=1.2.3", timeout=10, allow_redirects=False
    )
    assert first.status_code == 303
    assert first.headers["location"] == "/?next=%2Fohif%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"

    login = requests.post(
        f"{server.url}/auth/token", data={"username": "ann", "password": PASSWORD}, timeout=30
    )
    assert login.status_code == 200
    cookie = login.cookies.get("labelloop_session")
    assert cookie == login.json()["access_token"]
    set_cookie = login.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/" in set_cookie

    jar = {"labelloop_session": cookie}
    page = requests.get(f"{server.url}/ohif/viewer", cookies=jar, timeout=10, allow_redirects=False)
    assert page.status_code == 200 and b"window.PUBLIC_URL" in page.content
    # The cookie stands for a bearer token on the DICOMweb proxy only (this server has no PACS: 406).
    proxied = requests.get(f"{server.url}/proxy/dicom/qido/studies", cookies=jar, timeout=10)
    assert proxied.status_code == 406, proxied.text
    assert requests.get(f"{server.url}/proxy/dicom/qido/studies", timeout=10).status_code == 401
    assert requests.get(f"{server.url}/datastore/", cookies=jar, timeout=10).status_code == 401
    bad = requests.get(
        f"{server.url}/proxy/dicom/qido/studies", cookies={"labelloop_session": "x"}, timeout=10
    )
    assert bad.status_code == 401 and "detail" in bad.json()

    # Logging out of the dashboard forgets the cookie.
    out = requests.delete(f"{server.url}/auth/token", cookies=jar, timeout=10)
    assert out.status_code == 204
    assert (
        "labelloop_session=" in out.headers["set-cookie"] and "max-age=0" in out.headers["set-cookie"].lower()
    )
    assert json.loads(requests.get(f"{server.url}/auth/", timeout=10).text)["enabled"] is True
