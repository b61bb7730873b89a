"""HTTP routes: upload, list, rendered frames, exports.

Auth: ``Authorization: Bearer <join token>`` of the same room, whose holder is a current member
(not waiting, denied, removed or revoked; see kernel.membership.room_member).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from kernel.access import bearer_of
from kernel.errors import SignalingError
from kernel.http import error

from . import dicom
from .errors import AnnotationError, DocumentTooLarge, InvalidDocument, PermissionDenied
from .export import export_json, render_png
from .service import AnnotationService
from .settings import PacsSettings

#: (room, bearer token, write) -> (identity, name, grants.has), or SignalingError
Authenticate = Callable[[str, str, bool], Awaitable[tuple[str, str, Callable[[str], bool]]]]
#: refusals about the token itself (401); the rest are about membership (403)
_TOKEN_CODES = {
    "token_missing",
    "token_malformed",
    "token_expired",
    "token_invalid",
    "token_revoked",
}

_NAME_RE = re.compile(r"[^A-Za-z0-9 ._()-]+")


def _safe_name(name: str | None, default: str) -> str:
    cleaned = _NAME_RE.sub("_", name or "").strip()[:200]
    return cleaned or default


def _window(request: web.Request) -> dicom.Window | None:
    preset = request.query.get("preset")
    if preset:
        if preset not in dicom.WINDOW_PRESETS:
            raise InvalidDocument(
                f"unknown preset {preset!r}; one of {sorted(dicom.WINDOW_PRESETS)}",
                code="invalid_payload",
            )
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

    def __init__(
        self,
        service: AnnotationService,
        authenticate: Authenticate,
        pacs: PacsSettings | None = None,
    ) -> None:
        self.service = service
        self.authenticate = authenticate
        self.pacs = pacs  # where send_to_pacs sends, if configured

    def add_to(self, app: web.Application) -> None:
        """Register the routes."""
        base = "/api/rooms/{room}/documents"
        app.router.add_post(base, self.wrap(self.upload))
        app.router.add_get(base, self.wrap(self.list))
        app.router.add_get(base + "/{doc_id}", self.wrap(self.get))
        app.router.add_get(base + "/{doc_id}/frames/{frame}.png", self.wrap(self.frame_png))
        app.router.add_get(base + "/{doc_id}/export.png", self.wrap(self.export_png))
        app.router.add_get(base + "/{doc_id}/export.json", self.wrap(self.export_json))
        app.router.add_get(base + "/{doc_id}/export.gsps.dcm", self.wrap(self.export_gsps))
        app.router.add_get(base + "/{doc_id}/export.sr.dcm", self.wrap(self.export_sr))
        app.router.add_post(base + "/{doc_id}/send-to-pacs", self.wrap(self.send_to_pacs))

    def wrap(self, handler: Callable[..., Any]) -> Callable[[web.Request], Any]:
        async def run(request: web.Request) -> web.StreamResponse:
            room = request.match_info["room"]
            try:
                write = request.method != "GET"
                who = await self.authenticate(room, bearer_of(request), write)
                return await handler(request, room, who)
            except SignalingError as exc:
                return error(401 if exc.code in _TOKEN_CODES else 403, exc.code, exc.message)
            except AnnotationError as exc:
                return error(exc.http_status, exc.code, exc.message)

        return run

    async def _read_files(self, request: web.Request) -> list[tuple[str, bytes]]:
        limits = self.service.limits
        if request.content_length is not None and request.content_length > limits.max_total_bytes:
            raise DocumentTooLarge(f"upload over {limits.max_total_bytes} bytes")
        files: list[tuple[str, bytes]] = []
        total = 0
        if request.content_type.startswith("multipart/"):
            try:
                reader = await request.multipart()
            except (ValueError, AssertionError, KeyError) as exc:  # e.g. no boundary
                raise AnnotationError(
                    f"malformed multipart upload: {exc}", code="invalid_payload"
                ) from None
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
                files.append(
                    (_safe_name(part.filename, f"file-{len(files) + 1}"), b"".join(chunks))
                )
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
        return web.Response(
            body=body, content_type="image/png", headers={"Cache-Control": "private, max-age=60"}
        )

    async def export_png(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: the annotated PNG of one frame (?frame=, window as for frames)."""
        import asyncio

        info, annotations, _invalid, _view = await self.service.state(
            request.match_info["doc_id"], room
        )
        index, window = _frame(request, info.frames), _window(request)

        def render() -> tuple[bytes, int]:
            base = self.service.frames.render(info, index, window)
            return render_png(base, info, annotations, index)

        body, scale = await asyncio.to_thread(render)
        return web.Response(
            body=body,
            content_type="image/png",
            headers={
                "X-Export-Scale": str(scale),
                "Content-Disposition": f'attachment; filename="{info.id}-{index}.png"',
            },
        )

    async def export_json(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: metadata, annotations with measurements, and the view state."""
        info, annotations, invalid, view = await self.service.state(
            request.match_info["doc_id"], room
        )
        body = export_json(info, annotations, invalid, view)
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def export_gsps(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: a DICOM Grayscale Softcopy Presentation State of the marks (DICOM documents)."""
        import asyncio

        from .gsps import build_gsps

        info, annotations, _invalid, view = await self.service.state(
            request.match_info["doc_id"], room
        )
        if info.kind != "dicom":
            raise InvalidDocument(
                "a presentation state exists only for DICOM documents", code="not_dicom"
            )
        window = _window(request) or _view_window(view)

        def build() -> bytes:
            blobs, refs = _series(info.frame_index)
            datasets = [self.service.frames.dataset(b) for b in blobs]
            return build_gsps(datasets, refs, annotations, window)

        body = await asyncio.to_thread(build)
        return web.Response(
            body=body,
            content_type="application/dicom",
            headers={"Content-Disposition": f'attachment; filename="{info.id}-gsps.dcm"'},
        )

    async def export_sr(self, request: web.Request, room: str, _who: Any) -> web.Response:
        """GET: a DICOM SR (TID 1500 Measurement Report) of the measurements (DICOM documents).

        It references the presentation state exported with the same window (?preset=, ?wc=&ww=,
        else the shared view's, else the file's or a computed one).
        """
        import asyncio

        from .gsps import presentation_state
        from .sr import build_sr

        info, annotations, _invalid, view = await self.service.state(
            request.match_info["doc_id"], room
        )
        if info.kind != "dicom":
            raise InvalidDocument("a DICOM SR exists only for DICOM documents", code="not_dicom")
        window = _window(request) or _view_window(view)

        def build() -> bytes:
            blobs, refs = _series(info.frame_index)
            datasets = [self.service.frames.dataset(b) for b in blobs]
            pr = presentation_state(datasets, refs, annotations, window)
            return build_sr(datasets, refs, annotations, pr)

        body = await asyncio.to_thread(build)
        return web.Response(
            body=body,
            content_type="application/dicom",
            headers={"Content-Disposition": f'attachment; filename="{info.id}-sr.dcm"'},
        )

    async def send_to_pacs(self, request: web.Request, room: str, who: Any) -> web.Response:
        """POST: C-STORE the original images, the presentation state and the SR to the PACS.

        Body (optional JSON): ``{"objects": ["original", "gsps", "sr"]}``; without a body all
        three, the SR only when there is a measurement. Window parameters as for
        ``export.gsps.dcm``. Needs the ``annotate`` grant.
        """
        import asyncio

        from .gsps import encode, presentation_state
        from .pacs import PacsNotConfigured, PacsTarget, c_store
        from .sr import NoMeasurements, build_sr

        _identity, _name, has = who
        if not has("annotate"):
            raise PermissionDenied("sending to the PACS needs the annotate grant")
        pacs = self.pacs
        if pacs is None:
            raise PacsNotConfigured("no PACS is configured ([pacs] host, port, called_ae)")
        wanted, explicit = ["original", "gsps", "sr"], False
        if request.can_read_body:
            explicit = True
            try:
                body = await request.json()
                wanted = list(body.get("objects", wanted)) if isinstance(body, dict) else []
            except (ValueError, TypeError):
                raise InvalidDocument(
                    'the body must be JSON: {"objects": [...]}', code="invalid_payload"
                ) from None
        if not wanted or any(w not in ("original", "gsps", "sr") for w in wanted):
            raise InvalidDocument(
                "objects must be a non-empty list of original, gsps, sr", code="invalid_payload"
            )
        info, annotations, _invalid, view = await self.service.state(
            request.match_info["doc_id"], room
        )
        if info.kind != "dicom":
            raise InvalidDocument("only DICOM documents go to a PACS", code="not_dicom")
        window = _window(request) or _view_window(view)
        target = PacsTarget(pacs.host, pacs.port, pacs.called_ae, pacs.calling_ae, pacs.timeout_s)

        def send() -> list[Any]:
            blobs, refs = _series(info.frame_index)
            datasets = [self.service.frames.dataset(b) for b in blobs]
            objects: list[tuple[str, Any]] = []
            if "original" in wanted:
                objects += [("original", self.service.blobs.get(b)) for b in blobs]
            pr = presentation_state(datasets, refs, annotations, window)
            if "gsps" in wanted:
                objects.append(("gsps", encode(pr)))
            if "sr" in wanted:
                try:
                    objects.append(("sr", build_sr(datasets, refs, annotations, pr)))
                except NoMeasurements:
                    if explicit:
                        raise  # asked for by name: say why there is none
            return c_store(target, objects)

        stored = await asyncio.to_thread(send)
        return web.json_response(
            {
                "stored": [
                    {
                        "object": s.label,
                        "sop_class_uid": s.sop_class_uid,
                        "sop_instance_uid": s.sop_instance_uid,
                        "status": s.status,
                    }
                    for s in stored
                ]
            }
        )


def _series(frame_index: list[dict[str, Any]]) -> tuple[list[str], list[tuple[int, int]]]:
    """A DICOM document's stored files in order, and each frame as (file index, frame)."""
    blobs: list[str] = []
    refs: list[tuple[int, int]] = []
    for entry in frame_index:
        if entry["blob"] not in blobs:
            blobs.append(entry["blob"])
        refs.append((blobs.index(entry["blob"]), int(entry["frame"])))
    return blobs, refs


def _view_window(view: dict[str, Any]) -> dicom.Window | None:
    """The shared view's window, if it has a valid one."""
    try:
        width = float(view["window_width"])
        return dicom.Window(float(view["window_center"]), width) if width >= 1.0 else None
    except (KeyError, TypeError, ValueError):
        return None
