"""The web pages in headless Chromium: a page that fails the test on any console or page error,
screenshots into ``$PYTEST_OUTPUT/screenshots`` (else ``tests/web/screenshots``), users and uploads."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page

from labelloop.api.web import PAGES, static_dir
from tests.support.browser import OfflinePage, offline_page
from tests.support.servers import LiveServer

PASSWORD = "a long dashboard password"
#: How long a page may take to show its data (two cores, a cold server).
READY_MS = 20_000


@pytest.fixture(scope="session", autouse=True)
def built() -> None:
    """The pages must have been built (``make web``; ``make pytest`` does it first)."""
    for page in PAGES.values():
        if not (static_dir() / page).is_file():
            pytest.fail(f"the web pages are not built in {static_dir()} (no {page}): run `make web`")


@pytest.fixture(scope="session")
def shots() -> Path:
    root = Path(os.environ["PYTEST_OUTPUT"]) if os.environ.get("PYTEST_OUTPUT") else Path(__file__).parent
    folder = root / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Dashboard:
    """A browser tab on a server's dashboard; ``console`` and ``errors`` collect what went wrong."""

    page: Page
    url: str
    shots: Path
    console: list[str] = field(default_factory=list)
    #: Console errors a test expects, by a part of their text: the browser logs every answer of
    #: 400 and above ("Failed to load resource: ... 409"), also one the page handles by design.
    expected: list[str] = field(default_factory=list)

    def open(self, hash_: str = "") -> None:
        if self.page.url.startswith(self.url + "/") and hash_:
            # The router marks the new page ready once its data is on screen.
            self.page.evaluate(
                "h => { delete document.getElementById('page').dataset.ready; location.hash = h }", hash_
            )
        else:
            self.page.goto(f"{self.url}/{hash_}")
        self.ready()

    def ready(self) -> None:
        self.page.wait_for_selector("main[data-ready]", timeout=READY_MS)

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text().strip()

    def shot(self, name: str) -> Path:
        self.page.wait_for_timeout(200)  # charts draw on the next animation frame
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")  # noqa: T201 - the reviewer's pointer to the picture
        return path

    def login(self, name: str, password: str = PASSWORD) -> None:
        self.page.goto(f"{self.url}/")
        self.page.wait_for_selector("form.login", timeout=READY_MS)
        self.page.fill("input[name=username]", name)
        self.page.fill("input[name=password]", password)
        self.page.click("form.login button[type=submit]")
        self.page.wait_for_selector('[data-testid="user"]', timeout=READY_MS)
        self.ready()


DashboardFactory = Callable[[LiveServer], Dashboard]


@pytest.fixture
def dashboard(browser: Browser, shots: Path) -> Iterator[DashboardFactory]:
    """``dashboard(server)``: a new offline tab; after the test, no console error, page error or
    request off this machine may have happened in any of them."""
    made: list[tuple[Dashboard, OfflinePage]] = []
    with ExitStack() as stack:

        def open_one(server: LiveServer) -> Dashboard:
            offline = stack.enter_context(offline_page(browser))
            offline.page.set_viewport_size({"width": 1280, "height": 900})
            board = Dashboard(offline.page, server.url, shots)

            def record(message: ConsoleMessage) -> None:
                if message.type == "error":
                    board.console.append(message.text)

            offline.page.on("console", record)
            made.append((board, offline))
            return board

        yield open_one
    for board, offline in made:
        unexpected = [text for text in board.console if not any(part in text for part in board.expected)]
        assert unexpected == [], f"console errors: {unexpected}"
        assert offline.errors == [], f"page errors: {offline.errors}"
        assert offline.blocked == [], "the dashboard asked for files off this server"


def bearer(server: LiveServer, name: str, password: str = PASSWORD) -> dict[str, str]:
    answer = requests.post(
        f"{server.url}/auth/token", data={"username": name, "password": password}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def next_case(server: LiveServer, client: str, headers: dict[str, str] | None = None) -> str:
    answer = requests.post(
        f"{server.url}/activelearning/first", json={"client_id": client}, headers=headers, timeout=60
    )
    assert answer.status_code == 200, answer.text
    image_id: str = answer.json()["id"]
    return image_id


def save_label(
    server: LiveServer,
    image_id: str,
    path: Path,
    client: str,
    *,
    tag: str = "",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    with path.open("rb") as f:
        answer = requests.put(
            f"{server.url}/datastore/label",
            params={"image": image_id, **({"tag": tag} if tag else {})},
            files={"label": (path.name, f)},
            data={"params": json.dumps({"client_id": client})},
            headers=headers,
            timeout=60,
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body
