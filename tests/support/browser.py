"""Debian's Chromium, headless, driven by Playwright; pages may reach loopback only.

Every request a page makes to another host is aborted and recorded, so a test can assert that a
page works with no internet (the network hospitals run on) and loads nothing from a CDN.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium for the test session (``make test-deps`` installs Debian's ``chromium``)."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} is missing: `make test-deps` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class OfflinePage:
    """A page whose requests off loopback are aborted; ``blocked`` lists their URLs."""

    page: Page
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def offline_page(browser: Browser) -> Iterator[OfflinePage]:
    context = browser.new_context()
    page = context.new_page()
    result = OfflinePage(page)

    def route(r: Route) -> None:
        host = urlsplit(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            r.continue_()
        else:
            result.blocked.append(r.request.url)
            r.abort("internetdisconnected")

    context.route("**/*", route)
    page.on("pageerror", lambda exc: result.errors.append(str(exc)))
    try:
        yield result
    finally:
        context.close()
