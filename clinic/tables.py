"""The clinic tables, on the records' shared metadata (created by ``RecordStore.start``).

``clinic_visits``: a consult requested in a department (its room, patient, who took it).
``clinic_devices``: home devices and gateways allowed to post observations (key hashes only).
``clinic_observations``: every accepted reading, unique by (device, Observation id).
``clinic_alerts``: threshold crossings for the care team. ``clinic_thresholds``: per-patient
overrides of the default thresholds.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Index, Integer, String, Table, UniqueConstraint

from kernel.records.tables import metadata

clinic_visits = Table(
    "clinic_visits",
    metadata,
    Column("room", String(128), primary_key=True),
    Column("department", String(64), nullable=False),
    Column("patient", String(128), nullable=False),
    Column("patient_name", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("taken_by", String(128), nullable=True),
    Column("taken_at", Float, nullable=True),
    Column("risk", String(16), nullable=True),
    Index("ix_clinic_visits_taken_by", "taken_by", "taken_at"),
)

clinic_devices = Table(
    "clinic_devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("patient", String(128), nullable=False),
    Column("department", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

clinic_observations = Table(
    "clinic_observations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", String(64), nullable=False),
    Column("observation_id", String(64), nullable=False),
    Column("patient", String(128), nullable=False),
    Column("code", String(16), nullable=False),
    Column("value", Float, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("effective", String(40), nullable=True),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("device", "observation_id", "code", name="uq_clinic_observation"),
)

clinic_alerts = Table(
    "clinic_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient", String(128), nullable=False),
    Column("department", String(64), nullable=False),
    Column("observation", Integer, nullable=False),
    Column("code", String(16), nullable=False),
    Column("value", Float, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("rule", JSON, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("status", String(16), nullable=False, default="open"),
    Column("room", String(128), nullable=True),
    Column("handled_by", String(128), nullable=True),
    Index("ix_clinic_alerts_status", "status", "department"),
)

clinic_thresholds = Table(
    "clinic_thresholds",
    metadata,
    Column("patient", String(128), primary_key=True),
    Column("code", String(16), primary_key=True),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
)
