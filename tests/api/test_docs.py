"""The API explorer works with no internet: Swagger UI at ``/docs``, ReDoc at ``/redoc`` (issue 17,
item 8); ``/`` is the dashboard's.

FastAPI's stock pages load their scripts from jsDelivr; in Chromium with every request off
loopback aborted they stay blank. These tests load both pages that way and look for what the
scripts render from ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Callable

import requests
from playwright.sync_api import Browser

from labelloop.settings import AuthSettings
from tests.support.browser import offline_page
from tests.support.servers import LiveServer


def test_swagger_ui_renders_the_api_offline(browser: Browser, sqlite_server: LiveServer) -> None:
    with offline_page(browser) as offline:
        offline.page.goto(f"{sqlite_server.url}/docs")
        offline.page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
        assert "labelloop" in offline.page.inner_text(".swagger-ui .info .title")
        # The operations come from /openapi.json: MONAI Label's next-sample route is among them.
        offline.page.wait_for_selector('[data-path="/activelearning/{strategy}"]', timeout=20_000)
        assert offline.blocked == [], "the page asked for files off this server"
        assert offline.errors == []


def test_redoc_renders_the_api_offline(browser: Browser, sqlite_server: LiveServer) -> None:
    with offline_page(browser) as offline:
        offline.page.goto(f"{sqlite_server.url}/redoc")
        offline.page.wait_for_selector(".api-info h1", timeout=30_000)
        assert "labelloop" in offline.page.inner_text(".api-info h1")
        assert offline.blocked == [], "the page asked for files off this server (fonts, scripts)"
        assert offline.errors == []


def test_the_explorer_is_open_with_auth_on_and_its_files_are_a_fixed_list(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(auth=AuthSettings(enabled=True))
    pages = ("/", "/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json")
    for path in (*pages, "/docs/assets/swagger-ui-bundle.js"):
        r = requests.get(f"{server.url}{path}", timeout=30)
        assert r.status_code == 200, (path, r.status_code)
    js = requests.get(f"{server.url}/docs/assets/redoc.standalone.js", timeout=30)
    assert js.headers["content-type"].startswith("text/javascript")
    assert "max-age" in js.headers["cache-control"]
    # Nothing but the listed files: no path from the URL reaches the disk, and the rest needs a log-in.
    for name in ("../../../../etc/passwd", "%2e%2e%2fserver.py", "core.py"):
        assert requests.get(f"{server.url}/docs/assets/{name}", timeout=30).status_code in (401, 404)
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 401
