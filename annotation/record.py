"""The consult record's documents section: each shared document and the marks drawn on it,
and the route that serves a document's original file (the DICOM as uploaded)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from kernel.http import error
from kernel.records.consult_record import RecordSection, fhir_time, person_ref, stable_uuid

from .export import export_json
from .measure import label
from .service import AnnotationService

MAX_INLINE_JSON = 256 * 1024  # the annotation snapshot rides inline up to this size


def _measurement_text(measurement: dict[str, Any] | None) -> str:
    if not measurement:
        return ""
    try:
        return label(measurement)
    except (KeyError, TypeError, ValueError):
        return ""


def _originals(room: str, info: Any) -> list[dict[str, Any]]:
    """The uploaded file(s): one per stored DICOM file of a series, else the one upload."""
    url = f"/api/rooms/{room}/documents/{info.id}/original"
    if info.kind != "dicom":
        return [{"contentType": info.mime, "url": url, "size": info.size, "title": info.name}]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(info.frame_index):
        if entry["blob"] in seen:
            continue
        seen.add(entry["blob"])
        title = info.name if len(info.frame_index) == 1 else f"{info.name} [{index}]"
        attachment = {"contentType": info.mime, "url": f"{url}?frame={index}", "title": title}
        if entry["blob"] == info.sha256:
            attachment["size"] = info.size
        out.append(attachment)
    return out


Authenticate = Callable[[str, str], tuple[str, str, Callable[[str], bool]]]


def add_original_route(
    app: web.Application,
    service: AnnotationService,
    wrap: Callable[[Callable[..., Any]], Callable[[web.Request], Any]],
) -> None:
    """GET /api/rooms/{room}/documents/{doc_id}/original[?frame=N]: the file as uploaded (for
    a DICOM series, the file holding frame N). A current member's join token or the admin key,
    checked by ``wrap`` (the document routes' own access check)."""

    async def original(request: web.Request, room: str, _who: object) -> web.StreamResponse:
        info = await service.repo.get(request.match_info["doc_id"], room)
        digest = info.sha256
        if info.kind == "dicom" and "frame" in request.query:
            try:
                digest = info.frame_index[int(request.query["frame"])]["blob"]
            except (ValueError, IndexError):
                return error(400, "invalid_payload", "frame out of range")
        path = service.blobs.path(digest)
        if not path.is_file():
            return error(404, "not_found", "The stored file is gone.")
        suffix = ".dcm" if info.kind == "dicom" else ""
        name = info.name if info.name.endswith(suffix) else info.name + suffix
        return web.FileResponse(
            path,
            headers={
                "Content-Type": info.mime,
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            },
        )

    app.router.add_get("/api/rooms/{room}/documents/{doc_id}/original", wrap(original))


async def record_section(
    service: AnnotationService, room: str, encounter_url: str
) -> RecordSection:
    """DocumentReference per document (file plus its annotation snapshot) and summary lines."""
    section = RecordSection("Shared documents and annotations")
    for info in await service.repo.list_room(room):
        _info, annotations, invalid, view = await service.state(info.id, room)
        snapshot = json.dumps(export_json(info, annotations, invalid, view), default=str).encode()
        content = [{"attachment": a} for a in _originals(room, info)]
        annotated = {
            "contentType": "application/json",
            "url": f"/api/rooms/{room}/documents/{info.id}/export.json",
            "title": f"annotations on {info.name}",
        }
        if len(snapshot) <= MAX_INLINE_JSON:
            annotated["data"] = base64.b64encode(snapshot).decode()
        content.append({"attachment": annotated})
        content.append(
            {
                "attachment": {
                    "contentType": "image/png",
                    "url": f"/api/rooms/{room}/documents/{info.id}/export.png",
                    "title": f"{info.name} with annotations",
                }
            }
        )
        authors = sorted({a.author_name or a.author for a in annotations})
        section.resources.append(
            {
                "resourceType": "DocumentReference",
                "id": stable_uuid("document", room, info.id),
                "status": "current",
                "type": {
                    "text": f"shared {info.kind}" + (f" ({info.modality})" if info.modality else "")
                },
                "date": fhir_time(info.uploaded_at),
                "author": [person_ref(info.uploaded_by, info.uploaded_by_name or info.uploaded_by)],
                "description": f"{info.name}: {len(annotations)} annotation(s)"
                + (f" by {', '.join(authors)}" if authors else ""),
                "content": content,
                "context": {"encounter": [{"reference": encounter_url}]},
            }
        )
        who = info.uploaded_by_name or info.uploaded_by
        section.summary_lines.append(
            f"- {info.name} ({info.kind}, {info.frames} frame(s)) uploaded by {who} "
            f"at {fhir_time(info.uploaded_at)}: {len(annotations)} annotation(s)"
            + ("" if info.calibrated or info.kind != "dicom" else ", uncalibrated")
        )
        for a in annotations:
            text = f' "{a.text}"' if a.text else ""
            measured = _measurement_text(a.measurement)
            section.summary_lines.append(
                f"  - {a.tool} by {a.author_name or a.author} on frame {a.frame}{text}"
                + (f": {measured}" if measured else "")
            )
    if not section.summary_lines:
        section.summary_lines.append("- no documents were shared")
    return section
