"""The records schema when migrations began (every table of the release before them).

Revision ID: 0001
Revises: (none: the first revision)
Created: 2026-12-07 01:14:41.608159
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("log_id", sa.String(length=64), server_default="main", nullable=False),
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=512), nullable=False),
        sa.Column("result", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sig", sa.LargeBinary(length=64), nullable=False),
        sa.PrimaryKeyConstraint("log_id", "seq"),
    )
    op.create_table(
        "audit_tree_heads",
        sa.Column("log_id", sa.String(length=64), server_default="main", nullable=False),
        sa.Column(
            "tree_size",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sig", sa.LargeBinary(length=64), nullable=False),
        sa.PrimaryKeyConstraint("log_id", "tree_size"),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("mime", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("pixel_spacing", sa.JSON(), nullable=True),
        sa.Column("spacing_source", sa.String(length=32), nullable=True),
        sa.Column("series_uid", sa.String(length=64), nullable=True),
        sa.Column("frame_index", sa.JSON(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=128), nullable=False),
        sa.Column("uploaded_by_name", sa.String(length=128), nullable=False),
        sa.Column("uploaded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index("ix_documents_room", ["room"], unique=False)

    op.create_table(
        "recording_consents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recording_id", sa.String(length=32), nullable=False),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recording_consents", schema=None) as batch_op:
        batch_op.create_index("ix_recording_consents_rec", ["recording_id"], unique=False)

    op.create_table(
        "recording_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recording_id", sa.String(length=32), nullable=False),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("codec", sa.String(length=16), nullable=False),
        sa.Column("container", sa.String(length=16), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("stopped_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recording_files", schema=None) as batch_op:
        batch_op.create_index("ix_recording_files_rec", ["recording_id"], unique=False)

    op.create_table(
        "recordings",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("started_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("stopped_at", sa.Float(), nullable=True),
        sa.Column("stopped_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.create_index("ix_recordings_room", ["room"], unique=False)

    op.create_table(
        "rehab_plans",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("prescribed_by", sa.String(length=128), nullable=False),
        sa.Column("room", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rehab_plans", schema=None) as batch_op:
        batch_op.create_index("ix_rehab_plans_patient", ["patient", "active"], unique=False)

    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=False),
        sa.Column("revoked_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("jti"),
    )
    op.create_table(
        "rooms",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("ended_by", sa.String(length=128), nullable=True),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("lobby_policy", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "admissions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decided_at", sa.Float(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["room"],
            ["rooms.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("admissions", schema=None) as batch_op:
        batch_op.create_index("ix_admissions_room", ["room"], unique=False)

    op.create_table(
        "bans",
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("banned_at", sa.Float(), nullable=False),
        sa.Column("banned_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["room"],
            ["rooms.name"],
        ),
        sa.PrimaryKeyConstraint("room", "identity"),
    )
    op.create_table(
        "chat_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("sender_identity", sa.String(length=128), nullable=False),
        sa.Column("sender_name", sa.String(length=128), nullable=False),
        sa.Column("sender_role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reply_to", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["room"],
            ["rooms.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.create_index("ix_chat_messages_room_id", ["room", "id"], unique=False)

    op.create_table(
        "document_files",
        sa.Column("doc_id", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["doc_id"],
            ["documents.id"],
        ),
        sa.PrimaryKeyConstraint("doc_id", "sha256"),
    )
    with op.batch_alter_table("document_files", schema=None) as batch_op:
        batch_op.create_index("ix_document_files_sha256", ["sha256"], unique=False)

    op.create_table(
        "document_snapshots",
        sa.Column("doc_id", sa.String(length=32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column(
            "upto_update_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["doc_id"],
            ["documents.id"],
        ),
        sa.PrimaryKeyConstraint("doc_id"),
    )
    op.create_table(
        "document_updates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("doc_id", sa.String(length=32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["doc_id"],
            ["documents.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("document_updates", schema=None) as batch_op:
        batch_op.create_index("ix_document_updates_doc_id", ["doc_id", "id"], unique=False)

    op.create_table(
        "participant_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("joined_at", sa.Float(), nullable=False),
        sa.Column("left_at", sa.Float(), nullable=True),
        sa.Column("leave_reason", sa.String(length=32), nullable=True),
        sa.Column("node", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["room"],
            ["rooms.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("participant_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_participant_sessions_room", ["room"], unique=False)

    op.create_table(
        "rehab_plan_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("plan_id", sa.String(length=32), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("started_by", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("sets_prescribed", sa.Integer(), nullable=False),
        sa.Column("sets_done", sa.Integer(), nullable=False),
        sa.Column("reps_prescribed", sa.Integer(), nullable=False),
        sa.Column("reps_done", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["rehab_plans.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rehab_plan_runs", schema=None) as batch_op:
        batch_op.create_index("ix_rehab_plan_runs_patient", ["patient", "started_at"], unique=False)

    op.create_table(
        "rehab_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("room", sa.String(length=128), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("started_by", sa.String(length=128), nullable=False),
        sa.Column("exercise", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=False),
        sa.Column("end_reason", sa.String(length=32), nullable=False),
        sa.Column("reps", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["room"],
            ["rooms.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rehab_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_rehab_sessions_room", ["room"], unique=False)

    op.create_table(
        "rehab_plan_sets",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("item", sa.Integer(), nullable=False),
        sa.Column("set", sa.Integer(), nullable=False),
        sa.Column("exercise", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=True),
        sa.Column("target_reps", sa.Integer(), nullable=False),
        sa.Column("reps", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["rehab_plan_runs.id"],
        ),
        sa.PrimaryKeyConstraint("run_id", "item", "set"),
    )


def downgrade() -> None:
    op.drop_table("rehab_plan_sets")
    with op.batch_alter_table("rehab_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_rehab_sessions_room")

    op.drop_table("rehab_sessions")
    with op.batch_alter_table("rehab_plan_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_rehab_plan_runs_patient")

    op.drop_table("rehab_plan_runs")
    with op.batch_alter_table("participant_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_participant_sessions_room")

    op.drop_table("participant_sessions")
    with op.batch_alter_table("document_updates", schema=None) as batch_op:
        batch_op.drop_index("ix_document_updates_doc_id")

    op.drop_table("document_updates")
    op.drop_table("document_snapshots")
    with op.batch_alter_table("document_files", schema=None) as batch_op:
        batch_op.drop_index("ix_document_files_sha256")

    op.drop_table("document_files")
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_chat_messages_room_id")

    op.drop_table("chat_messages")
    op.drop_table("bans")
    with op.batch_alter_table("admissions", schema=None) as batch_op:
        batch_op.drop_index("ix_admissions_room")

    op.drop_table("admissions")
    op.drop_table("rooms")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("rehab_plans", schema=None) as batch_op:
        batch_op.drop_index("ix_rehab_plans_patient")

    op.drop_table("rehab_plans")
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index("ix_recordings_room")

    op.drop_table("recordings")
    with op.batch_alter_table("recording_files", schema=None) as batch_op:
        batch_op.drop_index("ix_recording_files_rec")

    op.drop_table("recording_files")
    with op.batch_alter_table("recording_consents", schema=None) as batch_op:
        batch_op.drop_index("ix_recording_consents_rec")

    op.drop_table("recording_consents")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_room")

    op.drop_table("documents")
    op.drop_table("audit_tree_heads")
    op.drop_table("audit_entries")
