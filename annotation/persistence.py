"""Durable document state: updates appended as they come, compacted into snapshots.

Appends and compactions are queued in call order and written by one flush loop, a whole batch
per transaction through the records store's writer: between two compactions, one row per
document and identity holding that identity's updates of the batch, merged.
Under load the loop commits at most once per ``commit_interval_s`` (group commit): a
transaction costs about 1 ms of CPU whatever it holds (SQLAlchemy, the driver thread, the
fsync), a row about 10 us, so many small batches were a fifth of the server's CPU per drawn
mark. The first write after a quiet interval commits at once.
An update is queued right after it was applied in memory, so a compaction queued later folds
exactly the updates queued before it: it deletes them and stores ``doc.get_update()`` in the
same transaction. Loading is snapshot + tail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from pycrdt import merge_updates
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .tables import document_snapshots, document_updates

T = TypeVar("T")

#: Shortest time between two commits of the log while updates keep coming (the added
#: latency of ``doc:saved`` under load; the ``doc:sync`` ack does not wait for it).
COMMIT_INTERVAL_S = 0.05


class Writer(Protocol):
    """What persistence needs of the records store (``kernel.records.store.RecordStore``)."""

    engine: AsyncEngine

    async def write(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``fn`` in a write transaction, in submission order; return once committed."""
        ...


@dataclass
class _Item:
    doc_id: str
    data: list[bytes]  # updates in order; a compaction's snapshot
    identity: str | None  # None for a compaction
    compaction: bool
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _merged(parts: list[bytes]) -> list[bytes]:
    """``parts`` as one update (updates commute: a row's order among the rows of one batch
    does not matter, yrs holds an update back until what it depends on arrives); as they
    are if yrs cannot merge them."""
    if len(parts) == 1:
        return parts
    try:
        return [merge_updates(*parts)]
    except Exception:  # never lose an update over a merge
        return parts


class UpdateLog:
    """Append-only update log plus one snapshot per document."""

    def __init__(self, store: Writer, *, commit_interval_s: float = COMMIT_INTERVAL_S) -> None:
        self.store = store
        self.commit_interval_s = commit_interval_s
        self._last_commit = -commit_interval_s  # loop time the last batch was taken
        self._pending: list[_Item] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.written = 0

    def append(self, doc_id: str, update: bytes, identity: str | None) -> asyncio.Future[None]:
        """Queue one update now (order is kept); the future resolves once it is committed."""
        return self._queue(_Item(doc_id, [update], identity, False))

    def append_parts(
        self, doc_id: str, parts: list[bytes], identity: str | None
    ) -> asyncio.Future[None]:
        """Queue the updates of one change (e.g. a client's and the server's fix-ups)."""
        return self._queue(_Item(doc_id, list(parts), identity, False))

    def compact(self, doc_id: str, snapshot: bytes) -> asyncio.Future[None]:
        """Queue a compaction: ``snapshot`` replaces every update queued before this call."""
        return self._queue(_Item(doc_id, [snapshot], None, True))

    def _queue(self, item: _Item) -> asyncio.Future[None]:
        self._pending.append(item)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_loop(), name="annotation-log")
        return item.future

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            wait = self._last_commit + self.commit_interval_s - loop.time()
            if wait > 0:  # a commit just ran: let this interval's updates share the next one
                await asyncio.sleep(wait)
            self._last_commit = loop.time()
            batch, self._pending = self._pending, []

            async def run(conn: AsyncConnection, batch: list[_Item] = batch) -> None:
                await self._write_batch(conn, batch)

            try:
                await self.store.write(run)
            except Exception as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.written += len(batch)
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)

    @staticmethod
    async def _write_batch(conn: AsyncConnection, batch: list[_Item]) -> None:
        # between two compactions, one row per (document, identity): its updates merged
        groups: dict[tuple[str, str | None], list[bytes]] = {}
        now = time.time()

        async def flush_rows() -> None:
            if groups:
                rows = [
                    {"doc_id": doc_id, "data": data, "identity": identity, "created_at": now}
                    for (doc_id, identity), parts in groups.items()
                    for data in _merged(parts)
                ]
                groups.clear()
                await conn.execute(insert(document_updates), rows)

        for item in batch:
            if not item.compaction:
                groups.setdefault((item.doc_id, item.identity), []).extend(item.data)
                continue
            await flush_rows()
            last = (
                await conn.execute(
                    select(document_updates.c.id)
                    .where(document_updates.c.doc_id == item.doc_id)
                    .order_by(document_updates.c.id.desc())
                    .limit(1)
                )
            ).scalar()
            await conn.execute(
                delete(document_updates).where(document_updates.c.doc_id == item.doc_id)
            )
            await conn.execute(
                delete(document_snapshots).where(document_snapshots.c.doc_id == item.doc_id)
            )
            await conn.execute(
                insert(document_snapshots).values(
                    doc_id=item.doc_id, data=item.data[0], upto_update_id=last or 0, created_at=now
                )
            )
        await flush_rows()

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def load(self, doc_id: str) -> list[bytes]:
        """The snapshot (if any) followed by the updates logged after it, in order."""
        async with self.store.engine.connect() as conn:
            snap = (
                await conn.execute(
                    select(document_snapshots.c.data).where(document_snapshots.c.doc_id == doc_id)
                )
            ).scalar()
            rows = await conn.execute(
                select(document_updates.c.data)
                .where(document_updates.c.doc_id == doc_id)
                .order_by(document_updates.c.id)
            )
            tail = [bytes(r[0]) for r in rows]
        return ([bytes(snap)] if snap is not None else []) + tail

    async def count_updates(self, doc_id: str) -> int:
        """How many updates are logged after the snapshot (for tests and metrics)."""
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(document_updates.c.id).where(document_updates.c.doc_id == doc_id)
            )
            return len(rows.all())
