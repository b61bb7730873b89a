"""An open consult outlives its join link's expiry: the browser adopts the `token:refresh` the
server sends before expiry, for document requests, reconnects and a reload of the page."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.web.helpers import WAIT_MS, pass_device_check


async def test_the_page_adopts_a_refreshed_token(start_server: Any, new_page: Any) -> None:
    live = await start_server(token_watch_interval_s=0.5)
    # a link that expires in 2 minutes: inside the refresh window from the start
    token = live.tokens("clinic-7", "dr-zhou", "host", "周医生", ttl_s=120)
    page = await new_page(lang="zh-CN")
    await pass_device_check(page, f"{live.url}/join?token={token}")
    await page.click("#join-btn")
    await expect(page.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
    await page.wait_for_function(
        "old => window.__tc.session.token !== old", arg=token, timeout=WAIT_MS
    )
    fresh = await page.evaluate("window.__tc.session.token")
    claims = await page.evaluate("window.__tc.session.claims")
    assert claims["exp"] > claims["iat"] + 120 and claims["sub"] == "dr-zhou"
    assert f"token={fresh}" in page.url  # a reload keeps the consult
    # the new token opens the room's documents like the old one
    status = await page.evaluate(
        """async (room) => (await fetch(`/api/rooms/${room}/documents`,
            {headers: {Authorization: `Bearer ${window.__tc.session.token}`}})).status""",
        "clinic-7",
    )
    assert status == 200
