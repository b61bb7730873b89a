"""Tables of consented recordings (on the shared records metadata)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, Text

from kernel.records.tables import metadata

recordings = Table(
    "recordings",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("room", String(128), nullable=False),
    Column("started_by", String(128), nullable=False),
    Column("reason", Text, nullable=True),
    Column("started_at", Float, nullable=False),
    Column("stopped_at", Float, nullable=True),
    Column("stopped_by", String(128), nullable=True),
    Index("ix_recordings_room", "room"),
)

recording_consents = Table(
    "recording_consents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recording_id", String(32), nullable=False),
    Column("room", String(128), nullable=False),
    Column("identity", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("consent", Boolean, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_recording_consents_rec", "recording_id"),
)

recording_files = Table(
    "recording_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recording_id", String(32), nullable=False),
    Column("room", String(128), nullable=False),
    Column("identity", String(128), nullable=False),
    Column("source", String(32), nullable=False),
    Column("path", Text, nullable=False),
    Column("codec", String(16), nullable=False),
    Column("container", String(16), nullable=False),
    Column("frames", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("dropped", Integer, nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("started_at", Float, nullable=False),
    Column("stopped_at", Float, nullable=False),
    Index("ix_recording_files_rec", "recording_id"),
)
