"""The clinic tables: visits, devices, observations, alerts, thresholds (clinic/tables.py).

Revision ID: 0004
Revises: 0003
Created: 2026-12-07 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clinic_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=False),
        sa.Column("observation", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("room", sa.String(length=128), nullable=True),
        sa.Column("handled_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_clinic_alerts_status", "clinic_alerts", ["status", "department"], unique=False
    )
    op.create_table(
        "clinic_devices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_table(
        "clinic_observations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("observation_id", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("effective", sa.String(length=40), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device", "observation_id", "code", name="uq_clinic_observation"),
    )
    op.create_table(
        "clinic_thresholds",
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("patient", "code"),
    )
    op.create_table(
        "clinic_visits",
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("patient_name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("taken_by", sa.String(length=128), nullable=True),
        sa.Column("taken_at", sa.Float(), nullable=True),
        sa.Column("risk", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("room"),
    )
    op.create_index(
        "ix_clinic_visits_taken_by", "clinic_visits", ["taken_by", "taken_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_clinic_visits_taken_by", table_name="clinic_visits")
    op.drop_table("clinic_visits")
    op.drop_table("clinic_thresholds")
    op.drop_table("clinic_observations")
    op.drop_table("clinic_devices")
    op.drop_index("ix_clinic_alerts_status", table_name="clinic_alerts")
    op.drop_table("clinic_alerts")
