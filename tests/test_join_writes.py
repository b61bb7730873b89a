"""Joins of one room do not wait for one another's session write, and nothing is acknowledged
(to the joiner or to the room) before that write is durable. Ordering only: a store whose
session insert waits on an event stands in for a slow disk. Rooms load concurrently, within
`max_rooms`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kernel.errors import ErrorCode, SignalingError
from kernel.records.store import RecordStore
from kernel.rooms import Room, RoomRegistry
from rtc_server.keys import RECORDS, SIGNALING
from tests.conftest import Live
from tests.helpers import Client, wait_until

Connect = Callable[..., Awaitable[Client]]


def hold_session_writes(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch, order: list[str]
) -> tuple[asyncio.Event, list[bool]]:
    """Session inserts wait for the returned event (or fail while the flag list holds True);
    `order` gets "durable:<identity>" when a session row is committed."""
    release = asyncio.Event()
    failing = [False]
    write_soon, open_session_soon = store.write_soon, store.open_session_soon

    def gated_write_soon(fn: Callable[[Any], Awaitable[Any]]) -> asyncio.Future[Any]:
        if "open_session_soon" not in fn.__qualname__:
            return write_soon(fn)

        async def held(conn: Any) -> Any:
            await release.wait()
            if failing[0]:
                raise RuntimeError("the disk is full")
            return await fn(conn)

        return write_soon(held)

    def noting_open_session_soon(room: str, identity: str, name: str, role: str) -> Any:
        session = open_session_soon(room, identity, name, role)
        session.add_done_callback(
            lambda f: order.append(f"durable:{identity}") if not f.exception() else None
        )
        return session

    monkeypatch.setattr(store, "write_soon", gated_write_soon)
    monkeypatch.setattr(store, "open_session_soon", noting_open_session_soon)
    return release, failing


async def test_joins_of_a_room_pass_each_others_pending_session_write(
    live: Live, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = live.app[SIGNALING]
    host = await connect("ward", "dr-a", "host")
    order: list[str] = []
    release, _failing = hold_session_writes(live.app[RECORDS], monkeypatch, order)
    first = await connect("ward", "dr-b", "host", join=False)
    second = await connect("ward", "dr-c", "clinician", join=False)
    room = ns.registry.get("ward")
    assert room is not None

    async def join(client: Client, who: str) -> Any:
        ack = await client.call("join", {})
        order.append(f"ack:{who}")
        return ack

    first_join = asyncio.create_task(join(first, "dr-b"))
    try:
        await wait_until(lambda: "dr-b" in room.participants)
        # the first join's session row is not written yet; the second join still gets
        # through its room-lock section (it used to wait there for that write)
        second_join = asyncio.create_task(join(second, "dr-c"))
        await wait_until(lambda: "dr-c" in room.participants)
        assert not room.lock.locked()
        assert not first_join.done() and not second_join.done()
        assert order == [] and not host.events["participant:joined"]
    finally:
        release.set()  # never leave the writer held (the server's close waits for it)
    acks = await asyncio.gather(first_join, second_join)
    assert [a["status"] for a in acks] == ["joined", "joined"], acks
    for who in ("dr-b", "dr-c"):
        assert order.index(f"durable:{who}") < order.index(f"ack:{who}"), order
    announced = {
        (await host.next("participant:joined"))["identity"],
        (await host.next("participant:joined"))["identity"],
    }
    assert announced == {"dr-b", "dr-c"}
    # the session ids are the committed rows'; a leave closes the right one
    ids = {room.participants[w].session.result() for w in ("dr-b", "dr-c")}
    assert len(ids) == 2
    await first.call("leave", {})
    rows = {r["identity"]: r for r in await live.app[RECORDS].sessions("ward")}
    assert rows["dr-b"]["leave_reason"] == "left" and rows["dr-c"]["left_at"] is None


async def test_a_join_whose_session_write_fails_is_taken_back_unannounced(
    live: Live, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = live.app[SIGNALING]
    host = await connect("ward", "dr-a", "host")
    order: list[str] = []
    release, failing = hold_session_writes(live.app[RECORDS], monkeypatch, order)
    failing[0] = True
    release.set()
    late = await connect("ward", "dr-b", "clinician", join=False)
    refused = await late.call("join", {})
    assert refused["ok"] is False and refused["error"]["code"] == "internal_error", refused
    room = ns.registry.get("ward")
    assert room is not None and "dr-b" not in room.participants
    # it may join again once the records can be written
    failing[0] = False
    again = await late.call("join", {})
    assert again.get("status") == "joined", again
    joined = await host.next("participant:joined")
    # one socket keeps its order: an announcement of the failed join would have come first
    assert joined["identity"] == "dr-b" and not host.events["participant:joined"]
    assert order == ["durable:dr-b"]


async def test_rooms_load_concurrently_within_max_rooms(tmp_path: Path) -> None:
    store = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    await store.start()
    try:
        # a room with history, created before this registry (a restart): loaded with it
        await store.create_room("old", "clinicians_direct")
        await store.add_ban("old", "mallory", "dr-a", None)
        registry = RoomRegistry(store, "clinicians_direct", max_rooms=3)
        names = ["old", "old", "a", "b", "c", "d"]
        opened = await asyncio.gather(*(registry.open(n) for n in names), return_exceptions=True)
        assert opened[0] is opened[1]  # one load, shared
        assert isinstance(opened[0], Room) and opened[0].bans == {"mallory"}
        full = [r for r in opened[2:] if isinstance(r, SignalingError)]
        assert len(full) == 2 and {e.code for e in full} == {ErrorCode.NODE_FULL}
        assert registry.active_count() == 3 and not registry._loads
        # a room created by its first join exists in the records and starts empty
        new = next(r for r in opened[2:] if isinstance(r, Room))
        assert await store.load_room(new.name) is not None
        assert (new.bans, new.admitted, list(new.recent_chat)) == (set(), set(), [])
    finally:
        await store.close()
