"""Document metadata (the ``documents`` row) and its repository on the records engine."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .errors import DocumentNotFound
from .tables import document_files, documents
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
        data["sop_uids"] = (
            [f.get("sop_uid") for f in self.frame_index] if self.kind == "dicom" else None
        )
        data["frame_sizes"] = [[f["width"], f["height"]] for f in self.frame_index]
        del data["frame_index"]
        return data


def _file_rows(doc_id: str, sha256: str, frame_index: Any) -> list[dict[str, str]]:
    digests = {sha256, *(entry["blob"] for entry in frame_index or ())}
    return [{"doc_id": doc_id, "sha256": d} for d in sorted(digests)]


def _from_row(row: Any) -> DocumentInfo:
    m = row._mapping
    return DocumentInfo(**{k: m[k] for k in DocumentInfo.__dataclass_fields__})


class DocumentRepository:
    """Insert and read document rows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(
        self, room: str, ingested: IngestedDocument, identity: str, name: str
    ) -> DocumentInfo:
        """Record who uploaded what into which room."""
        info = DocumentInfo(
            id=uuid.uuid4().hex,
            room=room,
            name=ingested.name[:256],
            kind=ingested.kind,
            mime=ingested.mime,
            sha256=ingested.sha256,
            size=ingested.size,
            frames=ingested.frames,
            width=ingested.width,
            height=ingested.height,
            modality=ingested.modality,
            pixel_spacing=ingested.pixel_spacing,
            spacing_source=ingested.spacing_source,
            series_uid=ingested.series_uid,
            frame_index=ingested.frame_index,
            uploaded_by=identity,
            uploaded_by_name=name,
            uploaded_at=time.time(),
        )
        async with self.engine.begin() as conn:
            await conn.execute(insert(documents).values(**asdict(info)))
            await conn.execute(
                insert(document_files), _file_rows(info.id, info.sha256, info.frame_index)
            )
        return info

    async def get(self, doc_id: str, room: str | None = None) -> DocumentInfo:
        """The document (in ``room`` when given); DocumentNotFound otherwise."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(documents).where(documents.c.id == doc_id))).first()
        if row is None or (room is not None and row._mapping["room"] != room):
            raise DocumentNotFound(f"no document {doc_id!r} in this room")
        return _from_row(row)

    async def index_files(self) -> int:
        """Fill ``document_files`` for documents stored before it existed; how many."""
        missing = (
            select(documents.c.id, documents.c.sha256, documents.c.frame_index)
            .select_from(
                documents.outerjoin(document_files, document_files.c.doc_id == documents.c.id)
            )
            .where(document_files.c.doc_id.is_(None))
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(missing)).all()
            for doc_id, sha256, frame_index in rows:
                await conn.execute(insert(document_files), _file_rows(doc_id, sha256, frame_index))
        return len(rows)

    async def files_in_use(self, digests: list[str]) -> set[str]:
        """Those of ``digests`` that some document uses."""
        used: set[str] = set()
        async with self.engine.connect() as conn:
            for i in range(0, len(digests), 500):
                batch = digests[i : i + 500]
                rows = await conn.execute(
                    select(document_files.c.sha256)
                    .distinct()
                    .where(document_files.c.sha256.in_(batch))
                )
                used.update(r[0] for r in rows)
        return used

    async def list_room(self, room: str) -> list[DocumentInfo]:
        """The room's documents, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(documents).where(documents.c.room == room).order_by(documents.c.uploaded_at)
            )
        return [_from_row(r) for r in rows]
