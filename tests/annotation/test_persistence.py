"""Update log: appends and compactions commit in order, a batch per commit interval (group
commit), one row per identity and batch; loading is snapshot + tail."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from pycrdt import Map
from sqlalchemy import select

from annotation.model import annotations_map, new_doc
from annotation.persistence import UpdateLog
from annotation.tables import document_updates, documents
from kernel.records.store import RecordStore
from rtc_server.migrations import open_store


async def make_store(tmp_path: Path) -> RecordStore:
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await store.start()
    async with store.engine.begin() as conn:
        await conn.execute(
            documents.insert().values(
                id="d" * 32,
                room="r",
                name="n",
                kind="image",
                mime="image/png",
                sha256="0" * 64,
                size=1,
                frames=1,
                width=1,
                height=1,
                frame_index=[],
                uploaded_by="u",
                uploaded_by_name="U",
                uploaded_at=time.time(),
            )
        )
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
    # m20..m29 and the delete: 11 updates, merged into one row per identity and batch
    assert 1 <= await log.count_updates("d" * 32) <= 11
    assert log.batches < len(futures)  # batched, not one transaction per update
    await store.close()

    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await store.start()
    again = new_doc()
    for update in await UpdateLog(store).load("d" * 32):
        again.apply_update(update)
    assert annotations_map(again).to_py() == amap.to_py()
    assert "m3" not in annotations_map(again).to_py() and len(amap) == 29
    await store.close()


def _two_authors() -> tuple[list[tuple[bytes, str]], dict[str, object]]:
    """Updates of two identities where bob's depend on alice's and alice's later ones on
    bob's: (update, identity) in the order the server applied them, and the final state."""
    alice, bob = new_doc(), new_doc()
    sent: list[tuple[bytes, str]] = []

    def change(doc, identity: str, fn) -> None:
        got: list[bytes] = []
        sub = doc.observe(lambda e: got.append(e.update))
        fn(annotations_map(doc))
        doc.unobserve(sub)
        for update in got:
            sent.append((update, identity))
            for other in (alice, bob):
                if other is not doc:
                    other.apply_update(update)

    change(alice, "alice", lambda m: m.__setitem__("m1", Map({"by": "alice"})))
    change(alice, "alice", lambda m: m.__setitem__("m3", Map({"by": "alice"})))
    change(bob, "bob", lambda m: m.__delitem__("m1"))
    change(bob, "bob", lambda m: m.__setitem__("m2", Map({"by": "bob"})))
    change(alice, "alice", lambda m: m["m2"].__setitem__("edited", True))
    assert annotations_map(bob).to_py() == annotations_map(alice).to_py()
    return sent, annotations_map(alice).to_py()


async def test_group_commit_keeps_order_across_identities(tmp_path: Path):
    store = await make_store(tmp_path)
    log = UpdateLog(store, commit_interval_s=0.05)
    sent, expected = _two_authors()
    first = log.append("d" * 32, sent[0][0], sent[0][1])
    await asyncio.wait_for(first, 10)  # the first write after a quiet spell commits at once
    rest = [log.append("d" * 32, u, who) for u, who in sent[1:]]  # one batch, two identities
    await asyncio.wait_for(asyncio.gather(*rest), 10)
    assert log.batches == 2
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(document_updates.c.identity).order_by(document_updates.c.id)
        )
        # alice's first update alone, then one row per identity in order of first appearance
        assert [r[0] for r in rows] == ["alice", "alice", "bob"]
    again = new_doc()
    # alice's second row comes first in its batch and holds an edit of bob's mark
    for update in await log.load("d" * 32):
        again.apply_update(update)
    assert annotations_map(again).to_py() == expected
    assert set(expected) == {"m2", "m3"} and expected["m2"]["edited"] is True
    await store.close()


async def test_group_commit_first_write_does_not_wait(tmp_path: Path):
    store = await make_store(tmp_path)
    log = UpdateLog(store, commit_interval_s=3600.0)
    doc = new_doc()
    got: list[bytes] = []
    doc.observe(lambda e: got.append(e.update))
    annotations_map(doc)["m"] = Map({"i": 1})
    await asyncio.wait_for(log.append("d" * 32, got[0], "alice"), 10)
    await store.close()


async def test_drain_commits_everything_queued(tmp_path: Path):
    """Closing a room drains the log: everything queued is committed, in order."""
    store = await make_store(tmp_path)
    log = UpdateLog(store, commit_interval_s=0.05)
    sent, expected = _two_authors()
    futures = []
    for update, who in sent:  # one commit per interval: several batches, each waits
        futures.append(log.append("d" * 32, update, who))
        await asyncio.sleep(0)
    await asyncio.wait_for(log.drain(), 10)
    assert all(f.done() and f.exception() is None for f in futures)
    await store.close()
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await store.start()
    again = new_doc()
    for update in await UpdateLog(store).load("d" * 32):
        again.apply_update(update)
    assert annotations_map(again).to_py() == expected
    await store.close()


async def test_crash_loses_nothing_reported_saved(tmp_path: Path):
    """A crash (the log's task and the store stopped mid-stream) keeps every update whose
    future had resolved; the others were never reported saved."""
    store = await make_store(tmp_path)
    log = UpdateLog(store, commit_interval_s=0.05)
    doc = new_doc()
    amap = annotations_map(doc)
    futures: list[asyncio.Future[None]] = []
    doc.observe(lambda e: futures.append(log.append("d" * 32, e.update, "alice")))
    for i in range(40):
        amap[f"m{i}"] = Map({"i": i})
        if i == 5:
            await asyncio.wait_for(futures[0], 10)  # the first batch is committed
    saved = [i for i, f in enumerate(futures) if f.done() and f.exception() is None]
    assert saved and len(saved) < len(futures)  # the rest wait for the next interval
    assert log._task is not None
    log._task.cancel()  # the crash: nothing more is written
    with contextlib.suppress(asyncio.CancelledError):
        await log._task
    await store.close()

    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'records.db'}")
    await store.start()
    again = new_doc()
    for update in await UpdateLog(store).load("d" * 32):
        again.apply_update(update)
    have = annotations_map(again).to_py() or {}
    assert {f"m{i}" for i in saved} <= set(have)
    await store.close()
