"""Record retention: consults are kept `record_retention_years` (default 15) after they end.

A room is expired once it ended (or, never ended, was last active) longer ago than the
retention period. Purging deletes its rows from every table of the shared metadata that has a
`room` column, and the rows that hang off those by foreign key (annotation updates and
snapshots), plus its recording files. The audit log is never purged: it is the proof of what
happened, and the purge itself is written to it. Feature packages add cleanups that run after
each purge (annotation deletes the document files no remaining document refers to: the blobs
are content-addressed and may be shared between rooms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.records import tables as t
from kernel.records.audit import AuditLog
from kernel.records.store import RecordStore

log = logging.getLogger(__name__)
YEAR_S = 365.25 * 24 * 3600
NEVER_PURGED = {"audit_entries", "audit_tree_heads", "revoked_tokens"}
# runs after a purge; returns what it deleted, by kind (e.g. {"document_blobs": 3})
Cleanup = Callable[[], Awaitable[dict[str, int]]]


async def expired_rooms(store: RecordStore, years: float, now: float | None = None) -> list[str]:
    """Rooms whose last activity is older than the retention period."""
    cutoff = (now if now is not None else time.time()) - years * YEAR_S
    last_seen = (
        select(
            t.participant_sessions.c.room,
            func.max(
                func.coalesce(t.participant_sessions.c.left_at, t.participant_sessions.c.joined_at)
            ).label("seen"),
        )
        .group_by(t.participant_sessions.c.room)
        .subquery()
    )
    stmt = (
        select(t.rooms.c.name)
        .select_from(t.rooms.outerjoin(last_seen, last_seen.c.room == t.rooms.c.name))
        .where(func.coalesce(t.rooms.c.ended_at, last_seen.c.seen, t.rooms.c.created_at) < cutoff)
        .order_by(t.rooms.c.name)
    )
    async with store.engine.connect() as conn:
        return [r.name for r in await conn.execute(stmt)]


def _room_tables() -> tuple[list[Table], list[tuple[Table, Any, Table, Any]]]:
    """Tables with a room column, and (child, fk column, parent, parent column) links to them."""
    with_room = [
        tb for tb in t.metadata.sorted_tables if "room" in tb.c and tb.name not in NEVER_PURGED
    ]
    children = []
    for tb in t.metadata.sorted_tables:
        if "room" in tb.c or tb.name in NEVER_PURGED:
            continue
        for fk in tb.foreign_keys:
            parent = fk.column.table
            if parent in with_room:
                children.append((tb, fk.parent, parent, fk.column))
    return with_room, children


async def purge_rooms(
    store: RecordStore, rooms: list[str], data_dir: Path, audit: AuditLog | None = None
) -> dict[str, int]:
    """Delete every record of `rooms`; returns rows deleted per table."""
    if not rooms:
        return {}
    with_room, children = _room_tables()
    counts: dict[str, int] = {}

    async def run(conn: AsyncConnection) -> None:
        for child, fk_col, parent, parent_col in children:
            ids = select(parent_col).where(parent.c.room.in_(rooms))
            result = await conn.execute(delete(child).where(fk_col.in_(ids)))
            counts[child.name] = counts.get(child.name, 0) + result.rowcount
        # children before parents: the rooms table last
        for tb in reversed(with_room):
            result = await conn.execute(delete(tb).where(tb.c.room.in_(rooms)))
            counts[tb.name] = result.rowcount
        result = await conn.execute(delete(t.rooms).where(t.rooms.c.name.in_(rooms)))
        counts["rooms"] = result.rowcount

    await store.write(run)
    for room in rooms:
        folder = data_dir / "recordings" / room
        if folder.is_dir():
            await asyncio.to_thread(shutil.rmtree, folder)
    if audit is not None:
        await audit.append(
            "records.purge", "retention", "rooms", "ok", {"rooms": rooms, "rows": counts}
        )
    log.info("retention: purged %d expired consult(s)", len(rooms))
    return counts


class RetentionTask:
    """Purges expired consults once at start and then every `interval_s`."""

    def __init__(
        self, store: RecordStore, audit: AuditLog, data_dir: Path, years: float, interval_s: float
    ) -> None:
        self.store = store
        self.audit = audit
        self.data_dir = data_dir
        self.years = years
        self.interval_s = interval_s
        self.cleanups: list[Cleanup] = []  # feature packages append theirs
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self, dry_run: bool = False) -> dict[str, Any]:
        rooms = await expired_rooms(self.store, self.years)
        if dry_run:
            deleted: dict[str, int] = {}
        else:
            deleted = await purge_rooms(self.store, rooms, self.data_dir, self.audit)
            if rooms:
                deleted.update(await self._clean_up())
        return {
            "retention_years": self.years,
            "rooms": rooms,
            "dry_run": dry_run,
            "deleted": deleted,
        }

    async def _clean_up(self) -> dict[str, int]:
        """Run every cleanup (one failing does not stop the others); audit what went."""
        removed: dict[str, int] = {}
        for cleanup in self.cleanups:
            try:
                for kind, count in (await cleanup()).items():
                    removed[kind] = removed.get(kind, 0) + count
            except Exception:
                log.exception("retention cleanup %r failed", cleanup)
        if any(removed.values()):
            await self.audit.append("records.purge_files", "retention", "files", "ok", removed)
            log.info("retention: removed %s", removed)
        return removed

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("retention check failed")
            await asyncio.sleep(self.interval_s)
