"""The browser app, served by the server itself; every asset is local."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"


async def index(_request: web.Request) -> web.FileResponse:
    """The app's entry page (also for /join?token=...)."""
    return web.FileResponse(STATIC_DIR / "index.html")


def setup(app: web.Application) -> None:
    """Serve the browser app at / and /join."""
    app.router.add_get("/", index)
    app.router.add_get("/join", index)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
