"""Fixtures for the browser tests: Debian's Chromium through Playwright, fake media devices.

Never downloads a browser: Playwright launches /usr/bin/chromium (`executable_path`). Every
request each page makes is recorded, so tests can assert that nothing leaves localhost.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")

CHROMIUM = os.environ.get("TELECONSULT_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "web"
BUNDLE = REPO / "web_client" / "static" / "dist" / "app.js"
EXECUTABLE = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the browser tests (with the reason) when Chromium or the built bundle is missing."""
    reason = None
    if EXECUTABLE is None:
        reason = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    elif not BUNDLE.is_file():
        reason = "web bundle not built: run scripts/build-web.sh"
    if reason is None:
        return
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=reason))


class Requests:
    """Every URL requested by the pages of a browser context."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def record(self, request: Any) -> None:
        self.urls.append(request.url)

    def outside(self) -> list[str]:
        """Requests to anything but this machine (data:/blob: URLs are local)."""
        bad = []
        for url in self.urls:
            parsed = urlparse(url)
            if parsed.scheme in ("data", "blob", "about", "chrome-extension"):
                continue
            if parsed.hostname not in LOCAL_HOSTS:
                bad.append(url)
        return bad


@pytest.fixture
async def browser(extra_chromium_args: list[str]) -> AsyncIterator[Any]:
    """One headless Chromium for the test (contexts inside it are the participants)."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=EXECUTABLE,
            headless=True,
            args=BASE_ARGS + extra_chromium_args,
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def extra_chromium_args() -> list[str]:
    return []


@pytest.fixture
def requests_seen() -> Requests:
    return Requests()


@pytest.fixture
def new_page(browser: Any, requests_seen: Requests) -> Any:
    """new_page(lang="en", viewport=...) -> a page in its own context (one participant)."""

    async def make(lang: str = "en", width: int = 1280, height: int = 860, **kw: Any) -> Any:
        context = await browser.new_context(
            viewport={"width": width, "height": height}, locale=lang, **kw
        )
        await context.grant_permissions(["camera", "microphone"])
        context.on("request", requests_seen.record)
        page = await context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors  # type: ignore[attr-defined]
        return page

    return make


@pytest.fixture
def shot() -> Any:
    """shot(page, name): save a full-page screenshot under test-output/web/."""
    OUTPUT.mkdir(parents=True, exist_ok=True)

    async def save(page: Any, name: str) -> Path:
        path = OUTPUT / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path

    return save
