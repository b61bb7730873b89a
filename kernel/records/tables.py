"""SQLAlchemy table definitions for consult records (one shared ``metadata``).

Other packages (annotation, rehab_vision) define their tables on the same ``metadata`` so that
one ``create_all`` at start-up makes the whole schema, in SQLite or PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

rooms = Table(
    "rooms",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("ended_by", String(128), nullable=True),
    Column("locked", Boolean, nullable=False, default=False),
    Column("lobby_policy", String(32), nullable=False, default="clinicians_direct"),
)

participant_sessions = Table(
    "participant_sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("room", String(128), ForeignKey("rooms.name"), nullable=False),
    Column("identity", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("joined_at", Float, nullable=False),
    Column("left_at", Float, nullable=True),
    Column("leave_reason", String(32), nullable=True),
    # the node (server process) that hosted the session: a restarting node closes only its own
    Column("node", String(64), nullable=True),
    Index("ix_participant_sessions_room", "room"),
)

admissions = Table(
    "admissions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("room", String(128), ForeignKey("rooms.name"), nullable=False),
    Column("identity", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("card", JSON, nullable=True),
    Column("decision", String(16), nullable=True),
    Column("decided_at", Float, nullable=True),
    Column("decided_by", String(128), nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_admissions_room", "room"),
)

bans = Table(
    "bans",
    metadata,
    Column("room", String(128), ForeignKey("rooms.name"), primary_key=True),
    Column("identity", String(128), primary_key=True),
    Column("banned_at", Float, nullable=False),
    Column("banned_by", String(128), nullable=False),
    Column("reason", Text, nullable=True),
)

chat_messages = Table(
    "chat_messages",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("room", String(128), ForeignKey("rooms.name"), nullable=False),
    Column("sender_identity", String(128), nullable=False),
    Column("sender_name", String(128), nullable=False),
    Column("sender_role", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("reply_to", BigInteger().with_variant(Integer, "sqlite"), nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_chat_messages_room_id", "room", "id"),
)

# audit log: an append-only Merkle tree (RFC 6962 hashing) per node (log_id = node id);
# see kernel/records/audit.py
audit_entries = Table(
    "audit_entries",
    metadata,
    Column("log_id", String(64), primary_key=True, server_default="main"),
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("ts_us", BigInteger, nullable=False),
    Column("subject", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object", String(512), nullable=False),
    Column("result", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("sig", LargeBinary(64), nullable=False),
)

audit_tree_heads = Table(
    "audit_tree_heads",
    metadata,
    Column("log_id", String(64), primary_key=True, server_default="main"),
    Column(
        "tree_size",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("ts_us", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("sig", LargeBinary(64), nullable=False),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("revoked_at", Float, nullable=False),
    Column("revoked_by", String(128), nullable=False),
    Column("reason", Text, nullable=True),
)
