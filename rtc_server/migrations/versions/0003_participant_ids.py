"""The hospital IDs (join token `mrn`) kept per room and person (kernel/records/identifiers.py).

Revision ID: 0003
Revises: 0002
Created: 2026-12-07 02:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "participant_ids",
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("mrn", sa.String(length=64), nullable=False),
        sa.Column("mrn_system", sa.String(length=256), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("room", "identity"),
    )


def downgrade() -> None:
    op.drop_table("participant_ids")
