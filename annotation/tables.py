"""Annotation tables on the shared records ``metadata`` (one ``create_all`` makes them)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
)

from kernel.records.tables import metadata

_BigId = BigInteger().with_variant(Integer, "sqlite")

documents = Table(
    "documents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("room", String(128), nullable=False),
    Column("name", String(256), nullable=False),
    Column("kind", String(16), nullable=False),  # image | pdf | dicom
    Column("mime", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),  # of the first (or only) stored file
    Column("size", BigInteger, nullable=False),  # total bytes of all files
    Column("frames", Integer, nullable=False),  # pages / slices / frames
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("modality", String(16), nullable=True),
    Column("pixel_spacing", JSON, nullable=True),  # [row_mm, col_mm] or null
    Column("spacing_source", String(32), nullable=True),  # PixelSpacing | ImagerPixelSpacing
    Column("series_uid", String(64), nullable=True),
    Column("frame_index", JSON, nullable=False),  # per frame: {blob, frame, sop_uid}
    Column("uploaded_by", String(128), nullable=False),
    Column("uploaded_by_name", String(128), nullable=False),
    Column("uploaded_at", Float, nullable=False),
    Index("ix_documents_room", "room"),
)

# which stored files (blobs) each document uses: its file and every frame's; indexed by digest
# so that retention can tell at once whether a file is still in use
document_files = Table(
    "document_files",
    metadata,
    Column("doc_id", String(32), ForeignKey("documents.id"), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Index("ix_document_files_sha256", "sha256"),
)

document_updates = Table(
    "document_updates",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("doc_id", String(32), ForeignKey("documents.id"), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("identity", String(128), nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_document_updates_doc_id", "doc_id", "id"),
)

document_snapshots = Table(
    "document_snapshots",
    metadata,
    Column("doc_id", String(32), ForeignKey("documents.id"), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("upto_update_id", _BigId, nullable=False),  # updates with id <= this are folded in
    Column("created_at", Float, nullable=False),
)
