"""The join page inside the hospital portal (an iframe on another origin), in Chromium: allowed
for the origins in `frame_ancestors` (the device check runs, camera included), refused by
Chromium's own CSP enforcement otherwise."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from playwright.async_api import expect

from tests.web.helpers import WAIT_MS


async def _portal(aiohttp_server: Any, join_url: str) -> str:
    """A page on another origin that embeds the join link the way a portal would."""

    async def page(_request: web.Request) -> web.Response:
        return web.Response(
            text=f'<!doctype html><meta charset="utf-8"><title>门户</title>'
            f'<iframe id="consult" src="{join_url}" width="1000" height="760" '
            f'allow="camera; microphone; display-capture"></iframe>',
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/", page)
    server = await aiohttp_server(app)
    # "localhost" and 127.0.0.1 are different origins: the portal is cross-origin
    return f"http://localhost:{server.port}/"


async def test_portal_origin_may_embed_the_join_page(
    start_server: Any, aiohttp_server: Any, new_page: Any, requests_seen: Any
) -> None:
    # the portal's origin must be known before the server starts: the portal page first,
    # its iframe pointed at the join link once the server runs
    portal = await _portal(aiohttp_server, "about:blank")
    live = await start_server(frame_ancestors=[portal.rstrip("/")])
    join = f"{live.url}/join?token={live.tokens('clinic-1', 'pat-3', 'patient', '王芳')}"
    page = await new_page(lang="zh-CN")
    await page.goto(portal)
    await page.evaluate("src => { document.querySelector('#consult').src = src; }", join)
    frame = page.frame_locator("#consult")
    for check in ("camera", "microphone", "connection"):
        await expect(frame.locator(f"#status-{check}")).to_have_attribute(
            "data-state", "ok", timeout=WAIT_MS
        )
    assert requests_seen.outside() == []


async def test_other_origins_cannot_embed_it(
    start_server: Any, aiohttp_server: Any, new_page: Any
) -> None:
    live = await start_server()
    join = f"{live.url}/join?token={live.tokens('clinic-1', 'pat-3', 'patient')}"
    portal = await _portal(aiohttp_server, join)
    page = await new_page()
    refused = asyncio.get_running_loop().create_future()

    def on_console(msg: Any) -> None:
        if "frame-ancestors" in msg.text and not refused.done():
            refused.set_result(msg.text)

    page.on("console", on_console)
    await page.goto(portal)
    text = await asyncio.wait_for(refused, WAIT_MS / 1000)
    assert "has been blocked" in text
    assert await page.frame_locator("#consult").locator("#join-btn").count() == 0
