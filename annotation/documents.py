"""Document metadata (the ``documents`` row) and its repository on the records engine."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .errors import DocumentNotFound
from .tables import documents
from .uploads import IngestedDocument


@dataclass(frozen=True)
class DocumentInfo:
    """One shared document of a room."""

    id: str
    room: str
    name: str
    kind: str
    mime: str
    sha256: str
    size: int
    frames: int
    width: int
    height: int
    modality: str | None
    pixel_spacing: list[float] | None
    spacing_source: str | None
    series_uid: str | None
    frame_index: list[dict[str, Any]]
    uploaded_by: str
    uploaded_by_name: str
    uploaded_at: float

    @property
    def calibrated(self) -> bool:
        """Whether millimetre measurements are possible."""
        return self.pixel_spacing is not None

    def public(self) -> dict[str, Any]:
        """The JSON view sent to clients (no storage paths)."""
        data = asdict(self)
        data["calibrated"] = self.calibrated
        data["sop_uids"] = [f.get("sop_uid") for f in self.frame_index] if self.kind == "dicom" \
            else None
        data["frame_sizes"] = [[f["width"], f["height"]] for f in self.frame_index]
        del data["frame_index"]
        return data


def _from_row(row: Any) -> DocumentInfo:
    m = row._mapping
    return DocumentInfo(**{k: m[k] for k in DocumentInfo.__dataclass_fields__})


class DocumentRepository:
    """Insert and read document rows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, room: str, ingested: IngestedDocument, identity: str,
                  name: str) -> DocumentInfo:
        """Record who uploaded what into which room."""
        info = DocumentInfo(
            id=uuid.uuid4().hex, room=room, name=ingested.name[:256], kind=ingested.kind,
            mime=ingested.mime, sha256=ingested.sha256, size=ingested.size,
            frames=ingested.frames, width=ingested.width, height=ingested.height,
            modality=ingested.modality, pixel_spacing=ingested.pixel_spacing,
            spacing_source=ingested.spacing_source, series_uid=ingested.series_uid,
            frame_index=ingested.frame_index, uploaded_by=identity, uploaded_by_name=name,
            uploaded_at=time.time(),
        )
        async with self.engine.begin() as conn:
            await conn.execute(insert(documents).values(**asdict(info)))
        return info

    async def get(self, doc_id: str, room: str | None = None) -> DocumentInfo:
        """The document (in ``room`` when given); DocumentNotFound otherwise."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(documents).where(documents.c.id == doc_id))).first()
        if row is None or (room is not None and row._mapping["room"] != room):
            raise DocumentNotFound(f"no document {doc_id!r} in this room")
        return _from_row(row)

    async def referenced_blobs(self) -> set[str]:
        """Digests of every blob some document row names (its file, and each frame's)."""
        referenced: set[str] = set()
        async with self.engine.connect() as conn:
            result = await conn.execute(select(documents.c.sha256, documents.c.frame_index))
            for sha256, frame_index in result:
                referenced.add(sha256)
                referenced.update(entry["blob"] for entry in frame_index or ())
        return referenced

    async def list_room(self, room: str) -> list[DocumentInfo]:
        """The room's documents, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(documents).where(documents.c.room == room)
                .order_by(documents.c.uploaded_at))
        return [_from_row(r) for r in rows]
