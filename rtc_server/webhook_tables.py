"""The webhook outbox (on the shared records metadata): deliveries not yet acknowledged by the
receiver, so a restart or a receiver outage loses none (schema revision 0002)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from kernel.records.tables import metadata

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    # the node that queued it delivers it (several nodes may share one database)
    Column("node", String(64), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("event", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    Column("last_error", Text, nullable=True),
    Index("ix_webhook_deliveries_node_next_at", "node", "next_at"),
)
