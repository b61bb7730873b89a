"""Service internals that the live tests reach only under load: doc:saved coalescing, when
a document is compacted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from annotation.service import AnnotationService
from rtc_server.migrations import open_store


class SlowNamespace:
    """A stand-in for the signaling namespace whose emit blocks until released."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, str]] = []
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def emit(self, event: str, data: Any, to: str) -> None:
        self.entered.set()
        await self.release.wait()
        self.sent.append((event, data, to))


def done_future() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


async def test_saves_landing_during_an_emit_are_still_announced(tmp_path: Path):
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    service = AnnotationService(store, tmp_path)
    ns = SlowNamespace()
    service.ns = ns
    service._on_saved(done_future(), "sid-a", "d" * 32, 1)
    await asyncio.wait_for(ns.entered.wait(), 5)  # the emitter is busy sending seq 1
    service._on_saved(done_future(), "sid-a", "d" * 32, 2)
    service._on_saved(done_future(), "sid-b", "d" * 32, 3)
    ns.release.set()
    await asyncio.wait_for(service._saved_task, 5)
    assert ("doc:saved", {"doc_id": "d" * 32, "seq": 2}, "sid-a") in ns.sent
    assert ("doc:saved", {"doc_id": "d" * 32, "seq": 3}, "sid-b") in ns.sent
    await store.engine.dispose()


def test_compaction_waits_for_count_and_half_the_snapshot(tmp_path: Path):
    """Every compact_every changes, and not before the tail is half the snapshot's size:
    the O(document) encode costs the same per change whatever the document's size."""
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    service = AnnotationService(store, tmp_path, compact_every=500)
    s: Any = SimpleNamespace(since_compaction=499, tail_bytes=10**6, snapshot_bytes=0)
    assert not service._compaction_due(s)  # a fresh document: every 500 changes
    s.since_compaction = 500
    assert service._compaction_due(s)
    s.snapshot_bytes, s.tail_bytes = 4_000_000, 1_999_999  # 10,000 marks: wait for 2 MB
    assert not service._compaction_due(s)
    s.tail_bytes = 2_000_000
    assert service._compaction_due(s)
