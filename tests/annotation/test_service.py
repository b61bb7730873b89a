"""Service internals that the live tests reach only under load: doc:saved coalescing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from annotation.service import AnnotationService
from rtc_server.records.store import RecordStore


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
    store = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
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
