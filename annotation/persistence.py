"""Durable document state: updates appended as they come, compacted into snapshots.

Writes go through the records store's single writer task (group commit, in order). An update
is enqueued right after it was applied in memory, so a compaction enqueued later folds exactly
the updates written before it: it deletes them and stores ``doc.get_update()`` in the same
transaction. Loading is snapshot + tail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .tables import document_snapshots, document_updates

T = TypeVar("T")


class Writer(Protocol):
    """What persistence needs of the records store (``rtc_server.records.store.RecordStore``)."""

    engine: AsyncEngine

    async def write(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``fn`` in a write transaction, in submission order; return once committed."""
        ...


class UpdateLog:
    """Append-only update log plus one snapshot per document."""

    def __init__(self, store: Writer) -> None:
        self.store = store

    def append(self, doc_id: str, update: bytes, identity: str | None) -> asyncio.Future[Any]:
        """Queue one update now (order is kept); the future resolves once it is committed."""
        stmt = insert(document_updates).values(
            doc_id=doc_id, data=update, identity=identity, created_at=time.time())

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(stmt)

        return asyncio.ensure_future(self.store.write(run))

    def compact(self, doc_id: str, snapshot: bytes) -> asyncio.Future[Any]:
        """Queue a compaction: ``snapshot`` replaces every update queued before this call."""

        async def run(conn: AsyncConnection) -> None:
            last = (await conn.execute(
                select(document_updates.c.id).where(document_updates.c.doc_id == doc_id)
                .order_by(document_updates.c.id.desc()).limit(1))).scalar()
            await conn.execute(delete(document_updates).where(document_updates.c.doc_id == doc_id))
            await conn.execute(
                delete(document_snapshots).where(document_snapshots.c.doc_id == doc_id))
            await conn.execute(insert(document_snapshots).values(
                doc_id=doc_id, data=snapshot, upto_update_id=last or 0, created_at=time.time()))

        return asyncio.ensure_future(self.store.write(run))

    async def load(self, doc_id: str) -> list[bytes]:
        """The snapshot (if any) followed by the updates logged after it, in order."""
        async with self.store.engine.connect() as conn:
            snap = (await conn.execute(
                select(document_snapshots.c.data).where(document_snapshots.c.doc_id == doc_id)
            )).scalar()
            rows = await conn.execute(
                select(document_updates.c.data).where(document_updates.c.doc_id == doc_id)
                .order_by(document_updates.c.id))
            tail = [bytes(r[0]) for r in rows]
        return ([bytes(snap)] if snap is not None else []) + tail

    async def count_updates(self, doc_id: str) -> int:
        """How many updates are logged after the snapshot (for tests and metrics)."""
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(document_updates.c.id).where(document_updates.c.doc_id == doc_id))
            return len(rows.all())
