"""HTTP routes: upload, list, rendered frames, exports.

Auth: ``Authorization: Bearer <join token>`` of the same room.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, web

from signaling.errors import SignalingError

from . import dicom
from .errors import AnnotationError, DocumentTooLarge, InvalidDocument, PermissionDenied
from .export import export_json, render_png
from .service import AnnotationService

#: (room, bearer token) -> (identity, name, grants.has)
Authenticate = Callable[[str, str], tuple[str, str, Callable[[str], bool]]]

_NAME_RE = re.compile(r"[^A-Za-z0-9 ._()-]+")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else ""


def _safe_name(name: str | None, default: str) -> str:
    cleaned = _NAME_RE.sub("_", name or "").strip()[:200]
    return cleaned or default


def _window(request: web.Request) -> dicom.Window | None:
    preset = request.query.get("preset")
    if preset:
        if preset not in dicom.WINDOW_PRESETS:
            raise InvalidDocument(
                f"unknown preset {preset!r}; one of {sorted(dicom.WINDOW_PRESETS)}",
                code="invalid_payload")
        return dicom.WINDOW_PRESETS[preset]
    wc, ww = request.query.get("wc"), request.query.get("ww")
    if wc is None and ww is None:
        return None
    try:
        center, width = float(wc or ""), float(ww or "")
    except ValueError:
        raise InvalidDocument("wc and ww must be numbers", code="invalid_payload") from None
    if not width >= 1.0 or abs(center) > 1e6 or width > 1e6:
        raise InvalidDocument("window out of range", code="invalid_payload")
    return dicom.Window(center, width)


def _frame(request: web.Request, frames: int) -> int:
    raw = request.match_info.get("frame") or request.query.get("frame", "0")
    try:
        index = int(raw)
    except ValueError:
        raise InvalidDocument("frame must be an integer", code="invalid_payload") from None
    if not 0 <= index < frames:
        raise InvalidDocument(f"frame out of range 0..{frames - 1}", code="invalid_payload")
    return index


class Routes:
    """aiohttp handlers bound to one service and one authenticate function."""

    def __init__(self, service: AnnotationService, authenticate: Authenticate) -> None:
        self.service = service
        self.authenticate = authenticate

    def add_to(self, app: web.Application) -> None:
        """Register the routes."""
        base = "/api/rooms/{room}/documents"
        app.router.add_post(base, self._wrap(self.upload))
        app.router.add_get(base, self._wrap(self.list))
        app.router.add_get(base + "/{doc_id}", self._wrap(self.get))
        app.router.add_get(base + "/{doc_id}/frames/{frame}.png", self._wrap(self.frame_png))
        app.router.add_get(base + "/{doc_id}/export.png", self._wrap(self.export_png))
        app.router.add_get(base + "/{doc_id}/export.json", self._wrap(self.export_json))
        app.router.add_get(base + "/{doc_id}/export.gsps.dcm", self._wrap(self.export_gsps))

    def _wrap(self, handler: Callable[..., Any]) -> Callable[[web.Request], Any]:
        async def run(request: web.Request) -> web.StreamResponse:
            room = request.match_info["room"]
            try:
                who = self.authenticate(room, _bearer(request))
                return await handler(request, room, who)
            except SignalingError as exc:
                return _error(401, exc.code, exc.message)
            except AnnotationError as exc:
                return _error(exc.http_status, exc.code, exc.message)

        return run

    async def _read_files(self, request: web.Request) -> list[tuple[str, bytes]]:
        limits = self.service.limits
        if request.content_length is not None and request.content_length > limits.max_total_bytes:
            raise DocumentTooLarge(f"upload over {limits.max_total_bytes} bytes")
        files: list[tuple[str, bytes]] = []
        total = 0
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader) or part.name != "file":
                    continue
                if len(files) >= limits.max_files:
                    raise DocumentTooLarge(f"more than {limits.max_files} files")
                chunks = []
                size = 0
                while chunk := await part.read_chunk(1 << 16):
                    size += len(chunk)
                    total += len(chunk)
                    if size > limits.max_file_bytes or total > limits.max_total_bytes:
                        raise DocumentTooLarge("upload over the size limit")
                    chunks.append(chunk)
                files.append((_safe_name(part.filename, f"file-{len(files) + 1}"),
                              b"".join(chunks)))
        else:
            chunks = []
            while chunk := await request.content.read(1 << 16):
                total += len(chunk)
                if total > limits.max_file_bytes:
                    raise DocumentTooLarge("upload over the size limit")
                chunks.append(chunk)
            files.append((_safe_name(request.query.get("name"), "document"), b"".join(chunks)))
        if not files or not any(data for _, data in files):
            raise InvalidDocument("no file in the upload (multipart field 'file' or raw body)")
        return files

    async def upload(self, request: web.Request, room: str, who: Any) -> web.Response:
        """POST: one file, or several DICOM files of one series, as one document."""
        identity, name, has = who
        if not has("annotate"):
            raise PermissionDenied("uploading needs the annotate grant")
        files = await self._read_files(request)
        info = await self.service.upload(room, identity, name, files)
        return web.json_response({"document": info.public()}, status=201)

    async def list(self, _request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: the room's documents."""
        docs = await self.service.repo.list_room(room)
        return web.json_response({"documents": [d.public() for d in docs]})

    async def get(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: one document's metadata."""
        info = await self.service.repo.get(request.match_info["doc_id"], room)
        return web.json_response({"document": info.public()})

    async def frame_png(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: one page/slice/frame rendered to PNG (DICOM: ?preset= or ?wc=&ww=)."""
        import asyncio
        from io import BytesIO

        info = await self.service.repo.get(request.match_info["doc_id"], room)
        index, window = _frame(request, info.frames), _window(request)

        def render() -> bytes:
            buf = BytesIO()
            self.service.frames.render(info, index, window).save(buf, format="PNG")
            return buf.getvalue()

        body = await asyncio.to_thread(render)
        return web.Response(body=body, content_type="image/png",
                            headers={"Cache-Control": "private, max-age=60"})

    async def export_png(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: the annotated PNG of one frame (?frame=, window as for frames)."""
        import asyncio

        info, annotations, _invalid, _view = await self.service.state(
            request.match_info["doc_id"], room)
        index, window = _frame(request, info.frames), _window(request)

        def render() -> tuple[bytes, int]:
            base = self.service.frames.render(info, index, window)
            return render_png(base, info, annotations, index)

        body, scale = await asyncio.to_thread(render)
        return web.Response(body=body, content_type="image/png",
                            headers={"X-Export-Scale": str(scale),
                                     "Content-Disposition":
                                         f'attachment; filename="{info.id}-{index}.png"'})

    async def export_json(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: metadata, annotations with measurements, and the view state."""
        info, annotations, invalid, view = await self.service.state(
            request.match_info["doc_id"], room)
        body = export_json(info, annotations, invalid, view)
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def export_gsps(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: a DICOM Grayscale Softcopy Presentation State of the marks (DICOM documents)."""
        import asyncio

        from .gsps import build_gsps

        info, annotations, _invalid, view = await self.service.state(
            request.match_info["doc_id"], room)
        if info.kind != "dicom":
            raise InvalidDocument("a presentation state exists only for DICOM documents",
                                  code="not_dicom")
        window = _window(request)
        if window is None and view.get("window_width"):
            try:
                window = dicom.Window(float(view["window_center"]), float(view["window_width"]))
            except (KeyError, TypeError, ValueError):
                window = None

        def build() -> bytes:
            blobs: list[str] = []
            refs: list[tuple[int, int]] = []
            for entry in info.frame_index:
                if entry["blob"] not in blobs:
                    blobs.append(entry["blob"])
                refs.append((blobs.index(entry["blob"]), int(entry["frame"])))
            datasets = [self.service.frames.dataset(b) for b in blobs]
            return build_gsps(datasets, refs, annotations, window)

        body = await asyncio.to_thread(build)
        return web.Response(body=body, content_type="application/dicom", headers={
            "Content-Disposition": f'attachment; filename="{info.id}-gsps.dcm"'})
