"""Alembic environment: runs on the connection handed over in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from rtc_server.migrations import load_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through `teleconsult db upgrade` (rtc_server.migrations), not alembic"
    )
context.configure(
    connection=connection,
    target_metadata=load_metadata(),
    # SQLite cannot ALTER most things: batch mode copies the table
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
