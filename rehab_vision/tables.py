"""The rehab session table, on the records' shared metadata (created by ``RecordStore.start``)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, Integer, String, Table

from rtc_server.records.tables import metadata

rehab_sessions = Table(
    "rehab_sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("room", String(128), ForeignKey("rooms.name"), nullable=False),
    Column("patient", String(128), nullable=False),
    Column("started_by", String(128), nullable=False),
    Column("exercise", String(64), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("end_reason", String(32), nullable=False),
    Column("reps", Integer, nullable=False),
    Column("score", Float, nullable=True),
    Column("report", JSON, nullable=False),
    Index("ix_rehab_sessions_room", "room"),
)
