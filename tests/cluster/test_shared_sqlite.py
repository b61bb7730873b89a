"""Workers share one SQLite file: a write waits while another process holds the write lock."""

from __future__ import annotations

import asyncio
import sys
import time

from rtc_server.migrations import open_store

HOLD_S = 1.0


async def test_writer_waits_for_another_process_holding_the_write_lock(tmp_path):
    db = tmp_path / "shared.db"
    store = open_store(f"sqlite+aiosqlite:///{db}", node="w0")
    await store.start()
    try:
        # another process takes the write lock and keeps it for HOLD_S
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            f"time.sleep({HOLD_S})\n"
            "c.execute('COMMIT')\n",
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 15) == b"locked\n"
        started = time.monotonic()
        record = await asyncio.wait_for(store.create_room("ward", "clinicians_direct"), 15)
        message = await store.add_chat("ward", "dr", "Dr", "host", "written after the lock", None)
        waited = time.monotonic() - started
        assert await asyncio.wait_for(holder.wait(), 10) == 0
        assert record.name == "ward"
        assert [m.text for m in await store.chat_history("ward", 10)] == [message.text]
        # the write did wait for the other process (busy_timeout), and did not fail
        assert waited > HOLD_S / 4, waited
    finally:
        await store.close()


async def test_each_node_closes_only_its_own_stale_sessions(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    w0, w1 = open_store(url, node="w0"), open_store(url, node="w1")
    await w0.start()
    await w1.start()
    try:
        await w0.create_room("a", "clinicians_direct")
        await w1.create_room("b", "clinicians_direct")
        s0 = await w0.open_session("a", "dr0", "Dr 0", "host")
        s1 = await w1.open_session("b", "dr1", "Dr 1", "host")
        # w1 restarts (after a crash): its session ends, w0's stays open
        await w1.close_open_sessions("server_restart")
        rows = {r["id"]: r for r in await w0.sessions("a") + await w0.sessions("b")}
        assert rows[s1]["leave_reason"] == "server_restart"
        assert rows[s0]["left_at"] is None and rows[s0]["node"] == "w0"
    finally:
        await w0.close()
        await w1.close()
