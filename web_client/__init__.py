"""The browser app, served by the server itself; every asset is local.

Routes: ``/`` and ``/join`` (the app), ``/static/`` (its bundle, styles and icons),
``/api/client-config`` (which server features exist, so the app never shows a fake panel) and
the hospital's health-education content (``/api/education``, ``/education/<file>``), read from
``<data_dir>/education/`` when that folder exists, else from the packaged defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
BUNDLE = STATIC_DIR / "dist" / "app.js"
DEFAULT_EDUCATION_DIR = Path(__file__).parent / "education"
EDUCATION_TYPES = {
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
}
MAX_EDUCATION_ITEMS = 100
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LANG_SUFFIX = re.compile(r"\.(en|zh-CN)$")

MISSING_BUNDLE_PAGE = Path(__file__).parent / "missing_bundle.html"


async def index(_request: web.Request) -> web.StreamResponse:
    """The app's entry page (also for /join?token=...); a clear error if the bundle is missing."""
    if not BUNDLE.is_file():
        return web.FileResponse(
            MISSING_BUNDLE_PAGE, status=503, headers={"Content-Type": "text/html; charset=utf-8"}
        )
    return web.Response(
        text=_index_html(), content_type="text/html", headers={"Cache-Control": "no-cache"}
    )


def _index_html() -> str:
    """index.html with the bundle and stylesheet versioned by modification time, so a browser
    never runs an old bundle after the server was upgraded (the page itself is never cached)."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for asset in ("dist/app.js", "app.css"):
        version = int((STATIC_DIR / asset).stat().st_mtime)
        page = page.replace(f"/static/{asset}", f"/static/{asset}?v={version}")
    return page


def _features(app: web.Application) -> dict[str, bool]:
    """Server features the app may show, from the signaling events actually registered."""
    from rtc_server.keys import SIGNALING

    ns: Any = app.get(SIGNALING)
    handlers = getattr(ns, "handlers", {}) if ns is not None else {}
    return {
        "media": "rtc:offer" in handlers,
        "documents": "doc:open" in handlers,
        "rehab": "rehab:start" in handlers,
    }


def _exercises() -> list[dict[str, Any]]:
    """The rehab exercises the server can count (names and titles in both languages)."""
    try:
        from rehab_vision.specs import exercise_names, get_spec
    except ImportError:  # rehab extras not installed
        return []
    out = []
    for name in exercise_names():
        title = get_spec(name).title
        out.append({"name": name, "title": {"en": title.en, "zh-CN": title.zh_cn}})
    return out


async def client_config(request: web.Request) -> web.Response:
    """What the app needs to know before joining: available features (and rehab exercises)."""
    features = _features(request.app)
    body: dict[str, Any] = {"features": features}
    if features["rehab"]:
        body["exercises"] = _exercises()
    return web.json_response(body)


def education_dir(app: web.Application) -> Path:
    """The hospital's education folder, or the packaged defaults."""
    from rtc_server.keys import SETTINGS

    settings = app.get(SETTINGS)
    if settings is not None:
        configured = Path(settings.data_dir) / "education"
        if configured.is_dir():
            return configured
    return DEFAULT_EDUCATION_DIR


def _education_items(folder: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not _SAFE_NAME.match(path.name):
            continue
        suffix = path.suffix.lower()
        if suffix not in EDUCATION_TYPES:
            continue
        stem = path.stem
        lang_match = _LANG_SUFFIX.search(stem)
        lang = lang_match.group(1) if lang_match else None
        title = _LANG_SUFFIX.sub("", stem).replace("_", " ").replace("-", " ")
        kind = EDUCATION_TYPES[suffix].split("/")[0]
        if kind == "text":
            first = path.read_text(encoding="utf-8", errors="replace").lstrip().splitlines()
            if first:
                title = first[0].lstrip("# ").strip()[:120] or title
        items.append(
            {
                "name": path.name,
                "title": title,
                "kind": kind,
                "lang": lang,
                "url": f"/education/{path.name}",
            }
        )
        if len(items) >= MAX_EDUCATION_ITEMS:
            break
    return items


async def education_list(request: web.Request) -> web.Response:
    """The health-education items the waiting room shows (text, images, videos)."""
    return web.json_response({"items": _education_items(education_dir(request.app))})


async def education_file(request: web.Request) -> web.StreamResponse:
    """One education file, by its plain name (no paths)."""
    name = request.match_info["name"]
    if not _SAFE_NAME.match(name) or Path(name).suffix.lower() not in EDUCATION_TYPES:
        raise web.HTTPNotFound()
    path = education_dir(request.app) / name
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        path,
        headers={
            "Content-Type": EDUCATION_TYPES[path.suffix.lower()],
            "X-Content-Type-Options": "nosniff",
        },
    )


def setup(app: web.Application) -> None:
    """Serve the browser app at / and /join, its assets and the education content."""
    app.router.add_get("/", index)
    app.router.add_get("/join", index)
    app.router.add_get("/api/client-config", client_config)
    app.router.add_get("/api/education", education_list)
    app.router.add_get("/education/{name}", education_file)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
