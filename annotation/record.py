"""The consult record's documents section: each shared document and the marks drawn on it."""

from __future__ import annotations

import base64
import json
from typing import Any

from rtc_server.records.consult_record import RecordSection, fhir_time, person_ref, stable_uuid

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


async def record_section(
    service: AnnotationService, room: str, encounter_url: str
) -> RecordSection:
    """DocumentReference per document (file plus its annotation snapshot) and summary lines."""
    section = RecordSection("Shared documents and annotations")
    for info in await service.repo.list_room(room):
        _info, annotations, invalid, view = await service.state(info.id, room)
        snapshot = json.dumps(export_json(info, annotations, invalid, view), default=str).encode()
        content: list[dict[str, Any]] = [
            {
                "attachment": {
                    "contentType": info.mime,
                    "url": f"/api/rooms/{room}/documents/{info.id}",
                    "size": info.size,
                    "title": info.name,
                }
            }
        ]
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
