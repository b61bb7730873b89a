"""The rehab tables, on the records' shared metadata (created by ``RecordStore.start``).

``rehab_sessions``: one row per live counting session (report JSON). Plans are keyed by the
patient's identity, not by room (a patient gets a new join link for each home session):
``rehab_plans`` holds each prescription (the active one per patient has ``active``),
``rehab_plan_runs`` one guided run of a plan, ``rehab_plan_sets`` one set of a run and the
counting session that measured it.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from kernel.records.tables import metadata

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

rehab_plans = Table(
    "rehab_plans",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("patient", String(128), nullable=False),
    Column("prescribed_by", String(128), nullable=False),
    Column("room", String(128), nullable=True),  # where it was prescribed (informative)
    Column("created_at", Float, nullable=False),
    Column("plan", JSON, nullable=False),  # RehabPlan.model_dump(mode="json")
    Column("active", Boolean, nullable=False, default=True),
    Index("ix_rehab_plans_patient", "patient", "active"),
)

rehab_plan_runs = Table(
    "rehab_plan_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("plan_id", String(32), ForeignKey("rehab_plans.id"), nullable=False),
    Column("patient", String(128), nullable=False),
    Column("room", String(128), nullable=False),
    Column("started_by", String(128), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("end_reason", String(32), nullable=True),
    Column("sets_prescribed", Integer, nullable=False),
    Column("sets_done", Integer, nullable=False, default=0),
    Column("reps_prescribed", Integer, nullable=False),
    Column("reps_done", Integer, nullable=False, default=0),
    Index("ix_rehab_plan_runs_patient", "patient", "started_at"),
)

rehab_plan_sets = Table(
    "rehab_plan_sets",
    metadata,
    Column("run_id", String(32), ForeignKey("rehab_plan_runs.id"), primary_key=True),
    Column("item", Integer, primary_key=True),  # 0-based step of the plan
    Column("set", Integer, primary_key=True),  # 1-based
    Column("exercise", String(64), nullable=False),
    Column("session_id", String(32), nullable=True),  # rehab_sessions.id (None: no camera)
    Column("target_reps", Integer, nullable=False),
    Column("reps", Integer, nullable=False),
    Column("skipped", Boolean, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
)
