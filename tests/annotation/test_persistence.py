"""Update log: appends and compactions commit in order; loading is snapshot + tail."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pycrdt import Map

from annotation.model import annotations_map, new_doc
from annotation.persistence import UpdateLog
from annotation.tables import documents
from rtc_server.records.store import RecordStore


async def make_store(tmp_path: Path) -> RecordStore:
    store = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await store.start()
    async with store.engine.begin() as conn:
        await conn.execute(documents.insert().values(
            id="d" * 32, room="r", name="n", kind="image", mime="image/png", sha256="0" * 64,
            size=1, frames=1, width=1, height=1, frame_index=[], uploaded_by="u",
            uploaded_by_name="U", uploaded_at=time.time()))
    return store


async def test_snapshot_plus_tail_reproduces_the_doc(tmp_path: Path):
    store = await make_store(tmp_path)
    log = UpdateLog(store)
    doc = new_doc()
    futures = []
    doc.observe(lambda e: futures.append(log.append("d" * 32, e.update, "alice")))
    amap = annotations_map(doc)
    for i in range(30):
        amap[f"m{i}"] = Map({"i": i})
        if i == 19:  # compaction queued between appends folds exactly the ones before it
            futures.append(log.compact("d" * 32, doc.get_update()))
    del amap["m3"]
    await asyncio.gather(*futures)
    assert await log.count_updates("d" * 32) == 11  # m20..m29 and the delete
    assert log.batches < len(futures)  # batched, not one transaction per update
    await store.close()

    store = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await store.start()
    again = new_doc()
    for update in await UpdateLog(store).load("d" * 32):
        again.apply_update(update)
    assert annotations_map(again).to_py() == amap.to_py()
    assert "m3" not in annotations_map(again).to_py() and len(amap) == 29
    await store.close()
